package main

import (
	"os"
	"path/filepath"
	"strings"
)

// cliName is how a shell in the working directory runs this binary, for
// the commands `sluice dev` prints: its name when PATH finds this very
// file, else its path from the working directory (./bin/sluice after
// `make build`), else its absolute path.
func cliName(executable, getwd func() (string, error), lookPath func(string) (string, error)) string {
	exe, err := executable()
	if err != nil {
		return "sluice"
	}
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		exe = real
	}
	name := filepath.Base(exe)
	if p, err := lookPath(name); err == nil && sameFile(p, exe) {
		return shellQuote(name)
	}
	if wd, err := getwd(); err == nil {
		if rel, err := filepath.Rel(wd, exe); err == nil && filepath.IsLocal(rel) {
			return shellQuote("./" + rel)
		}
	}
	return shellQuote(exe)
}

func sameFile(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/-+=:,@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
