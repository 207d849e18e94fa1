// Package deploy_test checks the deployment artifacts beside it (Dockerfile,
// docker-compose example, systemd units, Kubernetes manifests) against the
// sluice binary built from this repository: no container engine runs here,
// so every manifest is parsed and its references are checked instead.
package deploy_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// repoRoot is the repository, one level up from this package.
const repoRoot = ".."

// cli is what `sluice --help` and `sluice CMD --help` of the built binary
// say: its commands and each command's flags (name => takes a value).
type cli struct {
	bin      string
	commands map[string]bool
	flags    map[string]map[string]bool
	helps    map[string]string
}

var (
	cliOnce sync.Once
	cliVal  *cli
	cliErr  error
)

// sluiceCLI builds ./cmd/sluice once for the whole test binary and reads
// its help.
func sluiceCLI(t *testing.T) *cli {
	t.Helper()
	cliOnce.Do(func() { cliVal, cliErr = buildCLI() })
	if cliErr != nil {
		t.Fatal(cliErr)
	}
	return cliVal
}

func buildCLI() (*cli, error) {
	dir, err := os.MkdirTemp("", "sluice-deploy-test-")
	if err != nil {
		return nil, err
	}
	// Left for the OS to clean: the binary outlives any one test.
	bin := filepath.Join(dir, "sluice")
	build := exec.Command("go", "build", "-o", bin, makeBuildPackage())
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build %s: %v\n%s", makeBuildPackage(), err, out)
	}
	c := &cli{bin: bin, commands: map[string]bool{}, flags: map[string]map[string]bool{}, helps: map[string]string{}}
	top, err := help(bin)
	if err != nil {
		return nil, err
	}
	for _, name := range parseCommands(top) {
		c.commands[name] = true
	}
	if len(c.commands) == 0 {
		return nil, fmt.Errorf("sluice --help lists no commands:\n%s", top)
	}
	return c, nil
}

// makeBuildPackage is the package `make build` builds.
func makeBuildPackage() string {
	pkg, err := makefileBuildPackage(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		panic(err)
	}
	return pkg
}

// help runs the binary with args and --help and returns what it printed,
// whatever its exit status (the flag package exits 2 after -h, cobra 0).
func help(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, append(args, "--help")...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		return "", fmt.Errorf("sluice %s --help: %w", strings.Join(args, " "), err)
	}
	return out.String(), nil
}

// helpOf returns what `sluice cmd --help` prints, reading it once.
func (c *cli) helpOf(t *testing.T, cmd string) string {
	t.Helper()
	if h, ok := c.helps[cmd]; ok {
		return h
	}
	out, err := help(c.bin, cmd)
	if err != nil {
		t.Fatal(err)
	}
	c.helps[cmd] = out
	return out
}

// flagsOf returns the flags of `sluice cmd`.
func (c *cli) flagsOf(t *testing.T, cmd string) map[string]bool {
	t.Helper()
	if f, ok := c.flags[cmd]; ok {
		return f
	}
	f := parseFlags(c.helpOf(t, cmd))
	if len(f) == 0 {
		t.Fatalf("sluice %s --help lists no flags:\n%s", cmd, c.helpOf(t, cmd))
	}
	c.flags[cmd] = f
	return f
}

// checkEnv returns what is wrong with the environment variables given to
// `sluice cmd`: a SLUICE_ variable its help does not mention is ignored.
func (c *cli) checkEnv(t *testing.T, where, cmd string, names []string) []string {
	t.Helper()
	var errs []string
	for _, n := range names {
		if strings.HasPrefix(n, "SLUICE_") && !strings.Contains(c.helpOf(t, cmd), n) {
			errs = append(errs, fmt.Sprintf("%s: `sluice %s` does not read %s (not in `sluice %s --help` of the binary built from this repository)", where, cmd, n, cmd))
		}
	}
	return errs
}

// check returns what is wrong with a sluice command line (args after the
// program name) found in where: an unknown command or unknown flags.
func (c *cli) check(t *testing.T, where string, args []string) []string {
	t.Helper()
	if len(args) == 0 {
		return []string{where + ": sluice without a command"}
	}
	cmd := args[0]
	if !c.commands[cmd] {
		return []string{fmt.Sprintf("%s: sluice has no command %q (commands: %s)", where, cmd, strings.Join(sortedKeys(c.commands), ", "))}
	}
	flags := c.flagsOf(t, cmd)
	var errs []string
	for i := 1; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		takesValue, ok := flags[name]
		if !ok {
			errs = append(errs, fmt.Sprintf("%s: `sluice %s` has no flag --%s (not in `sluice %s --help` of the binary built from this repository)", where, cmd, name, cmd))
			continue
		}
		if takesValue && !hasValue {
			i++ // --flag value
		}
	}
	return errs
}

// parseCommands reads the command list of `sluice --help`: the lines under
// "Commands:" (or cobra's "Available Commands:") up to a blank line.
func parseCommands(help string) []string {
	var names []string
	in := false
	for _, line := range strings.Split(help, "\n") {
		switch {
		case strings.HasSuffix(strings.TrimSpace(line), "Commands:"):
			in = true
		case in && strings.TrimSpace(line) == "":
			in = false
		case in:
			if f := strings.Fields(line); len(f) > 0 {
				names = append(names, f[0])
			}
		}
	}
	return names
}

// flagLine matches a flag in the flag package's help ("  -name type") and
// in cobra's ("  -n, --name type   usage", "      --name   usage"); a flag
// without a type is a boolean.
var flagLine = regexp.MustCompile(`^ +(?:-[A-Za-z0-9], )?--?([A-Za-z0-9][A-Za-z0-9._-]*)(?: ([A-Za-z0-9.\[\]]+))?(?:\s{2,}|\t|$)`)

func parseFlags(help string) map[string]bool {
	flags := map[string]bool{}
	for _, line := range strings.Split(help, "\n") {
		if m := flagLine.FindStringSubmatch(line); m != nil {
			flags[m[1]] = m[2] != "" && m[2] != "bool"
		}
	}
	return flags
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// makefileBuildPackage reads the package the Makefile's build target
// passes to go build.
func makefileBuildPackage(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "build:"):
			in = true
		case in && !strings.HasPrefix(line, "\t"):
			in = false
		case in && strings.Contains(line, "go build"):
			if pkg := goBuildPackage(strings.Fields(line)); pkg != "" {
				return pkg, nil
			}
		}
	}
	return "", fmt.Errorf("%s: no go build in the build target", file)
}

// goBuildPackage is the package argument of a go build command line.
func goBuildPackage(words []string) string {
	for i := 0; i+1 < len(words); i++ {
		if words[i] != "go" || words[i+1] != "build" {
			continue
		}
		for j := i + 2; j < len(words); j++ {
			w := words[j]
			switch {
			case w == "-o" || w == "-ldflags" || w == "-tags" || w == "-gcflags":
				j++
			case strings.HasPrefix(w, "-"):
			case w == "&&" || w == ";" || w == "\\":
				return ""
			default:
				return w
			}
		}
	}
	return ""
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name, help string
		want       map[string]bool
	}{
		{"flag package", "Usage of worker:\n  -coordinator string\n    \tcomma-separated coordinator addresses (default \"127.0.0.1:7070\")\n  -insecure\n    \tserve open\n  -keep-bytes value\n    \tbound\n  -x\tshort\n",
			map[string]bool{"coordinator": true, "insecure": false, "keep-bytes": true, "x": false}},
		{"cobra", "Flags:\n      --grpc-addr string   gRPC listen address (default \"127.0.0.1:7070\")\n  -h, --help               help for coordinator\n      --insecure           serve open\n      --slots int          tasks run at once\n",
			map[string]bool{"grpc-addr": true, "help": false, "insecure": false, "slots": true}},
		{"usage lines are not flags", "Usage:\n  sluice worker [flags]\n\n    \t-- a dash in usage\n    \t-1 means no bound\n", map[string]bool{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parseFlags(tc.help)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("parseFlags = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseCommands(t *testing.T) {
	flagPkg := "Usage: sluice COMMAND [flags]\n\nCommands:\n  dev          run etcd\n  worker       run a worker\n\nRun 'sluice COMMAND -h'\n"
	cobra := "Usage:\n  sluice [command]\n\nAvailable Commands:\n  completion  Generate\n  worker      run a worker\n\nFlags:\n  -h, --help   help\n"
	if got := fmt.Sprint(parseCommands(flagPkg)); got != "[dev worker]" {
		t.Errorf("flag package help: %s", got)
	}
	if got := fmt.Sprint(parseCommands(cobra)); got != "[completion worker]" {
		t.Errorf("cobra help: %s", got)
	}
}
