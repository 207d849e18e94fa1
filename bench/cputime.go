package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is Linux's USER_HZ, the unit of the CPU times in /proc: 100 on
// every architecture Go supports (sysconf(_SC_CLK_TCK)).
const clockTick = 10 * time.Millisecond

// CPUTime reads the CPU time a live process has used so far, user and
// system, over all its threads (/proc/<pid>/stat; Linux only).
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("CPU time of process %d: %w", pid, err)
	}
	return parseStatCPU(string(b), pid)
}

// parseStatCPU reads utime and stime, the 14th and 15th fields of a
// /proc/<pid>/stat line. The 2nd, the command in brackets, may hold spaces
// and brackets, so fields are counted from the last ')'.
func parseStatCPU(stat string, pid int) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("CPU time of process %d: no command in %q", pid, stat)
	}
	f := strings.Fields(stat[i+1:]) // from the 3rd field, the state
	if len(f) < 13 {
		return 0, fmt.Errorf("CPU time of process %d: %d fields after the command, want at least 13", pid, len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("CPU time of process %d: %q: %w", pid, s, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * clockTick, nil
}
