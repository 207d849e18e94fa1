package deploy_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// unit is a systemd unit file: section => key => values (keys repeat).
type unit map[string]map[string][]string

func (u unit) get(section, key string) string {
	v := u[section][key]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// parseUnit reads a unit file: [Section] headers, Key=Value lines, # and ;
// comments, continuation lines ending in a backslash.
func parseUnit(text string) (unit, error) {
	u := unit{}
	section := ""
	var cont strings.Builder
	for i, line := range strings.Split(text, "\n") {
		if cont.Len() == 0 {
			t := strings.TrimSpace(line)
			if t == "" || strings.HasPrefix(t, "#") || strings.HasPrefix(t, ";") {
				continue
			}
		}
		if strings.HasSuffix(line, "\\") {
			cont.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cont.WriteString(line)
		l := strings.TrimSpace(cont.String())
		cont.Reset()
		if strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]") {
			section = l[1 : len(l)-1]
			u[section] = map[string][]string{}
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok || section == "" {
			return nil, fmt.Errorf("line %d: %q is not Key=Value in a section", i+1, l)
		}
		k = strings.TrimSpace(k)
		u[section][k] = append(u[section][k], strings.TrimSpace(v))
	}
	return u, nil
}

var systemdVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

func TestSystemdUnits(t *testing.T) {
	c := sluiceCLI(t)
	units, err := filepath.Glob("systemd/*.service")
	if err != nil || len(units) == 0 {
		t.Fatalf("no systemd units: %v", err)
	}
	seen := map[string]string{} // command => unit
	var coordGRPC int
	var workerCoords []string
	for _, file := range units {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		u, err := parseUnit(string(b))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		svc := u["Service"]
		if svc == nil {
			t.Fatalf("%s: no [Service]", file)
		}
		// Hardening and restarts.
		if u.get("Service", "DynamicUser") != "yes" && u.get("Service", "User") == "" {
			t.Errorf("%s: neither DynamicUser=yes nor User=: it would run as root", file)
		}
		for k, want := range map[string]string{"NoNewPrivileges": "yes", "Restart": "on-failure"} {
			if got := u.get("Service", k); got != want {
				t.Errorf("%s: %s=%q, want %s", file, k, got, want)
			}
		}
		if ps := u.get("Service", "ProtectSystem"); ps != "strict" && ps != "full" {
			t.Errorf("%s: ProtectSystem=%q, want strict (or full)", file, ps)
		}
		if u.get("Install", "WantedBy") == "" {
			t.Errorf("%s: no [Install] WantedBy: systemctl enable would do nothing", file)
		}

		// The environment file shipped beside the unit defines every
		// variable ExecStart uses.
		env := map[string]string{}
		for _, ef := range svc["EnvironmentFile"] {
			local := filepath.Join("systemd", filepath.Base(strings.TrimPrefix(ef, "-")))
			if _, err := os.Stat(local); err != nil {
				t.Errorf("%s: EnvironmentFile=%s: no example %s beside it", file, ef, local)
				continue
			}
			for k, v := range envFile(t, local) {
				env[k] = v
			}
		}
		creds := map[string]bool{}
		for _, lc := range svc["LoadCredential"] {
			name, _, _ := strings.Cut(lc, ":")
			creds[name] = true
		}
		if len(svc["ExecStart"]) != 1 {
			t.Fatalf("%s: %d ExecStart lines, want 1", file, len(svc["ExecStart"]))
		}
		execStart := svc["ExecStart"][0]
		for _, m := range systemdVar.FindAllStringSubmatch(execStart, -1) {
			name := m[1] + m[2]
			if _, ok := env[name]; !ok {
				t.Errorf("%s: ExecStart uses $%s, which its EnvironmentFile example does not set", file, name)
			}
			if m[2] != "" {
				t.Errorf("%s: ExecStart uses $%s: write ${%s}, which systemd does not split into words", file, name, name)
			}
		}
		words := shellWords(systemdVar.ReplaceAllStringFunc(execStart, func(s string) string {
			m := systemdVar.FindStringSubmatch(s)
			return env[m[1]+m[2]]
		}))
		if len(words) == 0 || filepath.Base(words[0]) != "sluice" || !filepath.IsAbs(words[0]) {
			t.Fatalf("%s: ExecStart=%s does not run sluice by absolute path", file, execStart)
		}
		args := words[1:]
		for _, e := range c.check(t, file, args) {
			t.Error(e)
		}
		seen[args0(args)] = file
		// What ExecStart does not use goes to the process's environment.
		var passed []string
		for _, k := range sortedKeys(env) {
			if !strings.Contains(execStart, "${"+k+"}") {
				passed = append(passed, k)
			}
		}
		for _, e := range c.checkEnv(t, file, args0(args), passed) {
			t.Error(e)
		}
		// Files come as credentials (%d/NAME), loaded by LoadCredential=.
		for _, f := range fileFlags {
			for _, v := range flagValues(args, f) {
				name, ok := strings.CutPrefix(v, "%d/")
				if !ok {
					t.Errorf("%s: --%s=%s: with DynamicUser= a file must come as a credential (%%d/NAME)", file, f, v)
				} else if !creds[name] {
					t.Errorf("%s: --%s=%s: no LoadCredential=%s:...", file, f, v, name)
				}
			}
		}
		for _, flag := range []string{"grpc-addr", "http-addr"} {
			if v := flagValue(args, flag); v != "" {
				_, port, ok := hostPort(v)
				if !ok {
					t.Errorf("%s: --%s=%s is not host:port", file, flag, v)
				} else if flag == "grpc-addr" {
					coordGRPC = port
				}
			}
		}
		switch args0(args) {
		case "coordinator":
			_, gp, _ := hostPort(flagValue(args, "grpc-addr"))
			if _, ap, ok := hostPort(flagValue(args, "advertise-addr")); !ok || ap != gp {
				t.Errorf("%s: --advertise-addr=%s, want the port of --grpc-addr (%d)", file, flagValue(args, "advertise-addr"), gp)
			}
		case "worker":
			workerCoords = splitList(flagValue(args, "coordinator"))
			if flagValue(args, "id") == "" {
				t.Errorf("%s: no --id: a worker's id must be stable across restarts, and it is its name under authentication", file)
			}
			if env["SLUICE_TOKEN"] == "" && flagValue(args, "token") == "" {
				t.Errorf("%s: the worker has no token (SLUICE_TOKEN in its EnvironmentFile)", file)
			}
		}

		// systemd's own check of the unit, with the binary built here.
		if analyze, err := exec.LookPath("systemd-analyze"); err == nil {
			dir := t.TempDir()
			fixed := strings.ReplaceAll(string(b), words[0], c.bin)
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(file)), []byte(fixed), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(analyze, "verify", filepath.Join(dir, filepath.Base(file)))
			if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
				t.Errorf("%s: systemd-analyze verify: %v\n%s", file, err, out)
			}
		} else {
			t.Logf("%s: systemd-analyze is not installed: not verified by systemd", file)
		}
	}
	for _, cmd := range []string{"coordinator", "worker"} {
		if seen[cmd] == "" {
			t.Errorf("systemd: no unit runs sluice %s", cmd)
		}
	}
	for _, addr := range workerCoords {
		if _, port, ok := hostPort(addr); !ok || port != coordGRPC {
			t.Errorf("systemd: the worker dials %s, the coordinator serves gRPC on port %d", addr, coordGRPC)
		}
	}
}

func TestParseUnit(t *testing.T) {
	u, err := parseUnit("# c\n[Service]\nExecStart=/bin/x \\\n    --a=1 \\\n    --b\nLoadCredential=a:/x\nLoadCredential=b:/y\n; c\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := u.get("Service", "ExecStart"); strings.Join(strings.Fields(got), " ") != "/bin/x --a=1 --b" {
		t.Errorf("ExecStart = %q", got)
	}
	if got := u["Service"]["LoadCredential"]; len(got) != 2 {
		t.Errorf("LoadCredential = %q", got)
	}
	if _, err := parseUnit("Key=value\n"); err == nil {
		t.Error("a key outside a section parsed")
	}
}
