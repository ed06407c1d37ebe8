//go:build race

package releasetest

// The library's own (newlib.manifest): the example domain's release tests,
// which a library made from the template writes for its own domain.

// raceEnabled says the tests run with the race detector: the releases are
// built with it too, so that their dependencies come from the build cache.
const raceEnabled = true
