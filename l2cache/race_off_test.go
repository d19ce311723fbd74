//go:build !race

package l2cache

const raceEnabled = false
