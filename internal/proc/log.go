package proc

import (
	"io"
	"strings"
	"sync"
)

// Log copies a process's output to a writer and keeps its end for error messages. One Log may serve
// several processes in turn (a server's initdb, then each run of its postmaster). Safe for concurrent
// use.
type Log struct {
	mu  sync.Mutex
	out io.Writer
	buf []byte
}

// tailBytes is about how much of the end of a log errors quote.
const tailBytes = 4096

// NewLog returns a Log that copies to out (nil: keeps only the end).
func NewLog(out io.Writer) *Log {
	if out == nil {
		out = io.Discard
	}
	return &Log{out: out}
}

// Write keeps p and copies it to the Log's writer; it never fails, so that a failing writer cannot stop
// a process.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if len(l.buf) > 2*tailBytes {
		l.buf = append(l.buf[:0:0], l.buf[len(l.buf)-tailBytes:]...)
	}
	_, _ = l.out.Write(p)
	return len(p), nil
}

// Tail returns the last whole lines written, at most about 4 KB.
func (l *Log) Tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buf
	if len(b) > tailBytes {
		b = b[len(b)-tailBytes:]
		if i := strings.IndexByte(string(b), '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return strings.TrimRight(string(b), "\n")
}
