//go:build e2e && !linux

package e2e

import "time"

// Outside Linux there is no /proc to read; TestLoad skips itself.

const procfs = false

func processExe(int) string { return "" }

func cpuTime(int) time.Duration { return 0 }

func childPIDs(int) []int { return nil }

func vmHWM(int) int { return 0 }

func cpuModel() string { return "unknown CPU" }
