//go:build race

package releasetest

// raceEnabled says the tests run with the race detector: the releases are
// built with it too, so that their dependencies come from the build cache.
const raceEnabled = true
