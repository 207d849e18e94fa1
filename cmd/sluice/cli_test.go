package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sluice-stream/sluice/client"
	"github.com/sluice-stream/sluice/coordinator"
	"github.com/sluice-stream/sluice/dev"
	"github.com/sluice-stream/sluice/kafkasrc"
)

// result is what a command line did.
type result struct {
	code           int
	stdout, stderr string
}

// sluice runs a command line as main would, with stdin as its input.
func sluice(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	code := execute(ctx, args, strings.NewReader(stdin), &out, &errOut)
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

// commandPaths are the argument lists naming every command, hidden ones
// (cobra's __complete) aside.
func commandPaths(cmd *cobra.Command, path []string) [][]string {
	var out [][]string
	for _, c := range cmd.Commands() {
		if c.Hidden {
			continue
		}
		p := append(slices.Clone(path), c.Name())
		out = append(out, p)
		out = append(out, commandPaths(c, p)...)
	}
	return out
}

func TestHelpExitsZero(t *testing.T) {
	paths := append([][]string{nil}, commandPaths(newRootCmd(), nil)...)
	if len(paths) < 20 {
		t.Fatalf("only %d commands: %v", len(paths), paths)
	}
	for _, path := range paths {
		for _, help := range []string{"--help", "-h"} {
			args := append(slices.Clone(path), help)
			r := sluice(t, "", args...)
			if r.code != 0 || !strings.Contains(r.stdout, "Usage:") || r.stderr != "" {
				t.Errorf("sluice %s: exit %d, stdout %q, stderr %q; want exit 0 and the usage on stdout", strings.Join(args, " "), r.code, r.stdout, r.stderr)
			}
		}
	}
	if r := sluice(t, "", "help", "txn", "list"); r.code != 0 || !strings.Contains(r.stdout, "--job") {
		t.Errorf("sluice help txn list: exit %d, %q", r.code, r.stdout)
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{args: nil, want: "sluice: a command is required"},
		{args: []string{"nosuch"}, want: `unknown command "nosuch" for "sluice"`},
		{args: []string{"jbos"}, want: "did you mean jobs or job?"},
		{args: []string{"jobs", "--nope"}, want: "sluice jobs: unknown flag: --nope"},
		{args: []string{"jobs", "extra"}, want: `sluice jobs: takes no arguments, got ["extra"]`},
		{args: []string{"job"}, want: "sluice job: want 1 argument(s) (JOB), got 0"},
		{args: []string{"stop", "a", "b"}, want: "sluice stop: want 1 argument(s) (JOB), got 2"},
		{args: []string{"txn"}, want: "sluice txn: a subcommand is required: list or abort"},
		{args: []string{"txn", "commit"}, want: `unknown command "commit" for "sluice txn"`},
		{args: []string{"txn", "list"}, want: "sluice txn list: --job is required"},
		{args: []string{"submit"}, want: "sluice submit: -f job file is required"},
		{args: []string{"validate"}, want: "sluice validate: -f job file is required"},
		{args: []string{"jobs", "-o", "yaml"}, want: `sluice jobs: -o "yaml": use text or json`},
		{args: []string{"batches", "j", "-n", "many"}, want: `invalid argument "many" for "-n, --limit"`},
		{args: []string{"reset", "j", "--to", "yesterday"}, want: `sluice reset: --to "yesterday": want earliest, latest or an RFC3339 time`},
		{args: []string{"reset", "j", "--offset", "t/0=1", "--to", "2026-11-21T10:00:00Z"}, want: "with --offset use earliest or latest"},
		{args: []string{"reset", "j", "--offset", "t0=1"}, want: `"t0=1": want topic/partition=offset`},
		{args: []string{"coordinator", "--keep-bytes", "64MB"}, want: "want a non-negative size"},
		{args: []string{"worker", "--label", "two words"}, want: "--label"},
		{args: []string{"dev", "--log-level", "loud"}, want: `sluice dev: --log-level "loud": use trace, debug, info, warn or error`},
		{args: []string{"coordinator", "--log-format", "xml"}, want: `sluice coordinator: --log-format "xml": use text or json`},
		{args: []string{"worker", "--log-format", "yaml"}, want: `--log-format "yaml": use text or json`},
		{args: []string{"validate", "-f", "x", "--allowed-bootstrap", "k1"}, want: `"k1": want host:port`},
		{args: []string{"completion"}, want: "want one shell: bash, zsh, fish, powershell"},
		{args: []string{"completion", "tcsh"}, want: "want one shell"},
		{args: []string{"help", "nosuch"}, want: `sluice help: unknown help topic "nosuch"`},
		{args: []string{"help", "txn", "commit"}, want: `unknown help topic "txn commit"`},
	}
	for _, tc := range tests {
		r := sluice(t, "", tc.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "Usage:") || r.stdout != "" {
			t.Errorf("sluice %s: exit %d, stdout %q, stderr %q; want exit 2 with %q and the usage on stderr", strings.Join(tc.args, " "), r.code, r.stdout, r.stderr, tc.want)
		}
	}
}

// TestOldFlagNames: the flags of the CLI before cobra keep working.
func TestOldFlagNames(t *testing.T) {
	for _, args := range [][]string{
		{"batches", "j", "--n", "5"}, {"batches", "j", "-n", "5"}, {"batches", "j", "--limit", "5"},
		{"jobs", "--o", "json"}, {"jobs", "-o", "json"}, {"jobs", "--output", "json"},
	} {
		// Nothing listens there: the flags parsed, the dial failed.
		r := sluice(t, "", append(args, "--coordinator", "127.0.0.1:1")...)
		if r.code != exitError || !strings.Contains(r.stderr, "Unavailable") {
			t.Errorf("sluice %s: exit %d, %q; want exit 1, Unavailable", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}

func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string]string{
		"bash":       "__start_sluice",
		"zsh":        "#compdef sluice",
		"fish":       "complete -c sluice",
		"powershell": "Register-ArgumentCompleter",
	} {
		r := sluice(t, "", "completion", shell)
		if r.code != 0 || !strings.Contains(r.stdout, want) || !strings.Contains(r.stdout, "__complete") {
			t.Errorf("sluice completion %s: exit %d, %d bytes without %q or __complete; stderr %q", shell, r.code, len(r.stdout), want, r.stderr)
		}
	}
}

func TestCLIName(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin", "sluice")
	other := filepath.Join(dir, "elsewhere", "sluice")
	spaced := filepath.Join(dir, "my tools", "sluice")
	for _, f := range []string{bin, other, spaced} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	found := func(p string) func(string) (string, error) {
		return func(string) (string, error) {
			if p == "" {
				return "", os.ErrNotExist
			}
			return p, nil
		}
	}
	tests := []struct {
		name, exe, wd, onPath, want string
	}{
		{name: "on PATH", exe: bin, wd: "/", onPath: bin, want: "sluice"},
		{name: "another sluice on PATH", exe: bin, wd: dir, onPath: other, want: "./bin/sluice"},
		{name: "make build", exe: bin, wd: dir, want: "./bin/sluice"},
		{name: "in the working directory", exe: bin, wd: filepath.Dir(bin), want: "./sluice"},
		{name: "outside the working directory", exe: bin, wd: filepath.Join(dir, "elsewhere"), want: bin},
		{name: "a space in the path", exe: spaced, wd: filepath.Join(dir, "elsewhere"), want: "'" + spaced + "'"},
	}
	for _, tc := range tests {
		got := cliName(func() (string, error) { return tc.exe, nil }, func() (string, error) { return tc.wd, nil }, found(tc.onPath))
		if got != tc.want {
			t.Errorf("%s: cliName = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// startCoordinator serves a coordinator (not leading: the JobService reads
// and writes etcd without it) on an embedded etcd, with policy.
func startCoordinator(t *testing.T, policy kafkasrc.Policy) (string, *client.Client) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts etcd")
	}
	etcdAddr, peer, err := freeAddrs()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, err := dev.StartEtcd(ctx, dev.EtcdConfig{Dir: t.TempDir(), ClientAddr: etcdAddr, PeerAddr: peer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdAddr}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := coordinator.DefaultConfig()
	cfg.Etcd = cli
	cfg.AdvertiseAddr = lis.Addr().String()
	cfg.KafkaPolicy = policy
	c, err := coordinator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gs := coordinator.NewGRPCServer(c)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	sdk, err := client.Dial([]string{lis.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sdk.Close() })
	return lis.Addr().String(), sdk
}

const goodYAML = `name: clicks
source:
  bootstrapServers: 127.0.0.1:19092
  topics: [clicks]
  startingOffsets: {position: START_POSITION_EARLIEST}
batchInterval: 1s
aggregate:
  key: json.page
  functions: [AGGREGATE_FUNCTION_COUNT]
`

func writeSpec(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func jobNames(t *testing.T, c *client.Client) []string {
	t.Helper()
	jobs, err := c.Jobs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, j := range jobs {
		names = append(names, j.GetSpec().GetName())
	}
	return names
}

// TestAgainstCoordinator runs the client commands against a coordinator:
// exit codes, offline validation with the server's messages, dry runs,
// specs on standard input and job-name completion.
func TestAgainstCoordinator(t *testing.T) {
	policy := []string{"--allowed-bootstrap", "127.0.0.1:19092", "--allow-kafka-property", "ssl.providers"}
	addr, sdk := startCoordinator(t, kafkasrc.Policy{Bootstrap: []string{"127.0.0.1:19092"}, Allow: []string{"ssl.providers"}})
	co := []string{"--coordinator", addr}

	t.Run("server error exits 1", func(t *testing.T) {
		r := sluice(t, "", append([]string{"job", "nosuch"}, co...)...)
		if r.code != exitError || !strings.HasPrefix(r.stderr, "sluice job: NotFound: ") || !strings.Contains(r.stderr, "nosuch") || strings.Contains(r.stderr, "Usage:") {
			t.Errorf("sluice job nosuch: exit %d, stderr %q; want exit 1, sluice job: NotFound: ... nosuch", r.code, r.stderr)
		}
	})

	bad := map[string]string{
		"no topics":          strings.Replace(goodYAML, "topics: [clicks]", "topics: []", 1),
		"bad name":           strings.Replace(goodYAML, "name: clicks", "name: Clicks_1", 1),
		"bad CEL":            strings.Replace(goodYAML, "key: json.page", "key: json.page +", 1),
		"broker not allowed": strings.Replace(goodYAML, "127.0.0.1:19092", "10.1.2.3:9092", 1),
		"refused property":   strings.Replace(goodYAML, "  topics: [clicks]", "  topics: [clicks]\n  properties: {plugin.library.paths: /tmp/x.so}", 1),
		"redacted secret":    strings.Replace(goodYAML, "  topics: [clicks]", "  topics: [clicks]\n  properties: {sasl.password: '[redacted]'}", 1),
	}
	for name, spec := range bad {
		t.Run("validate "+name, func(t *testing.T) {
			file := writeSpec(t, "job.yaml", spec)
			offline := sluice(t, "", append([]string{"validate", "-f", file}, policy...)...)
			dry := sluice(t, "", append([]string{"submit", "--dry-run", "-f", file}, co...)...)
			real := sluice(t, "", append([]string{"submit", "-f", file}, co...)...)
			msg, ok := strings.CutPrefix(real.stderr, "sluice submit: InvalidArgument: ")
			if real.code != exitError || !ok {
				t.Fatalf("sluice submit: exit %d, stderr %q; want exit 1, InvalidArgument", real.code, real.stderr)
			}
			if offline.code != exitError || offline.stderr != "sluice validate: InvalidArgument: "+msg || offline.stdout != "" {
				t.Errorf("sluice validate: exit %d, stderr %q; want exit 1 and the server's %q", offline.code, offline.stderr, msg)
			}
			if dry.code != exitError || dry.stderr != real.stderr {
				t.Errorf("sluice submit --dry-run: exit %d, stderr %q; want exit 1 and %q", dry.code, dry.stderr, real.stderr)
			}
		})
	}

	t.Run("validate good", func(t *testing.T) {
		r := sluice(t, "", append([]string{"validate", "-f", writeSpec(t, "job.yaml", goodYAML)}, policy...)...)
		if r.code != 0 || r.stdout != "job clicks: OK\n" || r.stderr != "" {
			t.Errorf("sluice validate: exit %d, stdout %q, stderr %q; want job clicks: OK", r.code, r.stdout, r.stderr)
		}
		if r := sluice(t, goodYAML, "validate", "-f", "-"); r.code != 0 || r.stdout != "job clicks: OK\n" {
			t.Errorf("sluice validate -f - (YAML): exit %d, %q %q", r.code, r.stdout, r.stderr)
		}
		if r := sluice(t, "", "validate", "-f", filepath.Join(t.TempDir(), "none.yaml")); r.code != exitError || !strings.Contains(r.stderr, "none.yaml") {
			t.Errorf("sluice validate of a missing file: exit %d, %q", r.code, r.stderr)
		}
	})

	t.Run("dry run stores nothing", func(t *testing.T) {
		r := sluice(t, goodYAML, append([]string{"submit", "--dry-run", "-f", "-"}, co...)...)
		if r.code != 0 || r.stdout != "job clicks: OK (dry run: nothing stored)\n" {
			t.Fatalf("sluice submit --dry-run: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		if names := jobNames(t, sdk); len(names) != 0 {
			t.Fatalf("after a dry run the coordinator has jobs %v", names)
		}
	})

	t.Run("submit from stdin", func(t *testing.T) {
		r := sluice(t, goodYAML, append([]string{"submit", "-f", "-"}, co...)...)
		if r.code != 0 || r.stdout != "job clicks submitted (running)\n" {
			t.Fatalf("sluice submit -f - (YAML): exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		json := `{"name": "clicks-json", "source": {"bootstrapServers": "127.0.0.1:19092", "topics": ["clicks"]}, "batchInterval": "1s", "aggregate": {}}`
		if r := sluice(t, json, append([]string{"submit", "-f", "-"}, co...)...); r.code != 0 || r.stdout != "job clicks-json submitted (running)\n" {
			t.Fatalf("sluice submit -f - (JSON): exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		if names := jobNames(t, sdk); !slices.Equal(names, []string{"clicks", "clicks-json"}) {
			t.Fatalf("jobs %v, want clicks and clicks-json", names)
		}
		dry := sluice(t, goodYAML, append([]string{"submit", "--dry-run", "-f", "-"}, co...)...)
		if dry.code != exitError || !strings.HasPrefix(dry.stderr, `sluice submit: AlreadyExists: job "clicks" exists`) {
			t.Errorf("sluice submit --dry-run of a taken name: exit %d, %q", dry.code, dry.stderr)
		}
		if r := sluice(t, "", "submit", "-f", "-"); r.code != exitError || !strings.Contains(r.stderr, "standard input") {
			t.Errorf("sluice submit -f - with nothing on stdin: exit %d, %q", r.code, r.stderr)
		}
	})

	t.Run("job name completion", func(t *testing.T) {
		tests := []struct {
			args []string
			want string
		}{
			{args: append([]string{"__complete", "stop"}, append(co, "")...), want: "clicks\nclicks-json\n:4\n"},
			{args: append([]string{"__complete", "batches", "--coordinator", addr, "-n", "5"}, "clicks-"), want: "clicks-json\n:4\n"},
			{args: append([]string{"__complete", "results"}, append(co, "x")...), want: ":4\n"},
			{args: append([]string{"__complete", "stop", "clicks"}, append(co, "")...), want: ":4\n"},
			{args: append([]string{"__complete", "txn", "list"}, append(co, "--job", "")...), want: "clicks\nclicks-json\n:4\n"},
			{args: []string{"__complete", "stop", "--coordinator", "127.0.0.1:1", ""}, want: ":4\n"},
		}
		for _, tc := range tests {
			r := sluice(t, "", tc.args...)
			if r.code != 0 || r.stdout != tc.want {
				t.Errorf("sluice %q: exit %d, stdout %q; want %q", tc.args, r.code, r.stdout, tc.want)
			}
		}
		t.Setenv("SLUICE_COORDINATOR", addr)
		if r := sluice(t, "", "__complete", "delete", "clicks-"); r.stdout != "clicks-json\n:4\n" {
			t.Errorf("completion with SLUICE_COORDINATOR: %q", r.stdout)
		}
	})
}
