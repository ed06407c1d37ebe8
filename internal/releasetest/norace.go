//go:build !race

package releasetest

// The library's own (newlib.manifest): the example domain's release tests,
// which a library made from the template writes for its own domain.

const raceEnabled = false
