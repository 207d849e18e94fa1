package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
)

// table is the report: one row per figure, and notes below it.
type table struct {
	rows  [][4]string
	notes []string
}

// add appends a row; ok is "yes", "no" or "" (no target).
func (t *table) add(measure, value, target, ok string) {
	t.rows = append(t.rows, [4]string{measure, value, target, ok})
}

func (t *table) note(format string, args ...any) {
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// print writes the table in Markdown, its columns aligned.
func (t *table) print(w io.Writer) {
	rows := append([][4]string{{"measure", "value", "target", "ok"}}, t.rows...)
	var width [4]int
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(r [4]string) {
		var b strings.Builder
		b.WriteString("|")
		for i, c := range r {
			fmt.Fprintf(&b, " %s%s |", c, strings.Repeat(" ", width[i]-len([]rune(c))))
		}
		fmt.Fprintln(w, b.String())
	}
	line(rows[0])
	var sep [4]string
	for i := range sep {
		sep[i] = strings.Repeat("-", width[i])
	}
	line(sep)
	for _, r := range rows[1:] {
		line(r)
	}
}

func numCPU() int { return runtime.NumCPU() }

// count formats a record count: 200k, 1M, 10M, 1.5M.
func count(n int64) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1_000_000:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	default:
		return fmt.Sprint(n)
	}
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
