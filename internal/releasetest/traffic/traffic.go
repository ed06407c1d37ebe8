// Package traffic is what an application does with the library while a
// release rolls out or back: goroutines that record events, list subjects and
// purge old events until told to stop, counting every call that failed and
// keeping the events that no purge may delete, to be looked for afterwards.
package traffic

// The library's own (newlib.manifest): the example domain's release tests,
// which a library made from the template writes for its own domain.

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/pgdual/mylib"
)

// Events recorded OldAge ago are what Purge removes: each call purges those
// older than PurgeAge. Events recorded at the current time stay.
const (
	OldAge   = 48 * time.Hour
	PurgeAge = 24 * time.Hour
)

// Subjects is how many subjects the events that stay are spread over:
// "subject-0" to "subject-7".
const Subjects = 8

// callTimeout bounds one call, so that a stalled call is counted as failed
// rather than hanging the application.
const callTimeout = time.Minute

// Report is what Serve did.
type Report struct {
	// Records, Lists and Purges count the calls that succeeded.
	Records int `json:"records"`
	Lists   int `json:"lists"`
	Purges  int `json:"purges"`
	// Purged is how many events the purges deleted.
	Purged int64 `json:"purged"`
	// Failed counts the calls that failed; Errors says what the first of
	// them were.
	Failed int      `json:"failed"`
	Errors []string `json:"errors,omitempty"`
	// Kept lists, per subject, the IDs of the events recorded at the current
	// time: no purge deletes them, so every one must be found afterwards.
	Kept map[string][]int64 `json:"kept"`
	// Slowest is how long the longest call took.
	Slowest time.Duration `json:"slowest"`
}

// maxErrors is how many failed calls a Report describes.
const maxErrors = 20

// Serve calls c from workers goroutines until stop closes, and returns what
// they did. Each round of a worker records an event that stays on one of the
// Subjects and an old one on a subject of its own (which Purge then removes
// with it), lists the first page of the subject, and every fourth round,
// the first included, purges. served is called once, when every worker has
// made a round.
func Serve(c *mylib.Client, workers int, stop <-chan struct{}, served func()) Report {
	reports := make([]Report, workers)
	var rounds, done sync.WaitGroup
	rounds.Add(workers)
	for w := range workers {
		done.Go(func() {
			r := &reports[w]
			r.Kept = map[string][]int64{}
			for i := 0; ; i++ {
				if i == 1 {
					rounds.Done()
				}
				select {
				case <-stop:
					if i == 0 {
						rounds.Done()
					}
					return
				default:
				}
				r.round(c, w, i)
			}
		})
	}
	rounds.Wait()
	served()
	done.Wait()

	total := Report{Kept: map[string][]int64{}}
	for _, r := range reports {
		total.Records += r.Records
		total.Lists += r.Lists
		total.Purges += r.Purges
		total.Purged += r.Purged
		total.Failed += r.Failed
		total.Errors = append(total.Errors, r.Errors...)
		for s, ids := range r.Kept {
			total.Kept[s] = append(total.Kept[s], ids...)
		}
		total.Slowest = max(total.Slowest, r.Slowest)
	}
	total.Errors = total.Errors[:min(len(total.Errors), maxErrors)]
	return total
}

// round is worker w's round i.
func (r *Report) round(c *mylib.Client, w, i int) {
	subject := fmt.Sprintf("subject-%d", (w+i)%Subjects)
	if ev, ok := call(r, "Record", func(ctx context.Context) (mylib.Event, error) {
		return c.Record(ctx, mylib.Event{Actor: fmt.Sprintf("worker-%d", w), Action: "stays", Subject: subject})
	}); ok {
		r.Records++
		r.Kept[subject] = append(r.Kept[subject], ev.ID)
	}
	if _, ok := call(r, "Record", func(ctx context.Context) (mylib.Event, error) {
		return c.Record(ctx, mylib.Event{Actor: fmt.Sprintf("worker-%d", w), Action: "goes",
			Subject: fmt.Sprintf("gone-%d-%d", w, i), At: time.Now().Add(-OldAge)})
	}); ok {
		r.Records++
	}
	if _, ok := call(r, "List", func(ctx context.Context) (mylib.Page, error) {
		return c.List(ctx, subject, 10, nil)
	}); ok {
		r.Lists++
	}
	if i%4 != 0 {
		return
	}
	if n, ok := call(r, "Purge", func(ctx context.Context) (int64, error) {
		return c.Purge(ctx, time.Now().Add(-PurgeAge))
	}); ok {
		r.Purges++
		r.Purged += n
	}
}

// call runs one call of the library, timing it and noting its failure.
func call[T any](r *Report, name string, f func(context.Context) (T, error)) (T, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	began := time.Now()
	v, err := f(ctx)
	r.Slowest = max(r.Slowest, time.Since(began))
	if err != nil {
		r.Failed++
		if len(r.Errors) < maxErrors {
			r.Errors = append(r.Errors, fmt.Sprintf("%s: %v", name, err))
		}
		return v, false
	}
	return v, true
}
