//go:build !race

package releasetest

const raceEnabled = false
