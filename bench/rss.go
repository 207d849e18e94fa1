package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// PeakRSS reads a live process's peak resident set size in bytes (VmHWM in
// /proc/<pid>/status; Linux only).
func PeakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("peak RSS of process %d: %w", pid, err)
	}
	defer f.Close()
	return parseVmHWM(f, pid)
}

// parseVmHWM reads VmHWM from a /proc/<pid>/status file.
func parseVmHWM(r io.Reader, pid int) (int64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("peak RSS of process %d: VmHWM %q: %w", pid, v, err)
		}
		return kb << 10, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("peak RSS of process %d: %w", pid, err)
	}
	return 0, fmt.Errorf("peak RSS of process %d: no VmHWM in its status", pid)
}
