package deploy_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const composeFile = "compose/docker-compose.yml"

type composeProject struct {
	Services map[string]*composeService `json:"services"`
	Secrets  map[string]struct {
		File string `json:"file"`
	} `json:"secrets"`
	Volumes map[string]any `json:"volumes"`
}

type composeService struct {
	Image string `json:"image"`
	Build *struct {
		Context    string `json:"context"`
		Dockerfile string `json:"dockerfile"`
	} `json:"build"`
	Entrypoint  []string          `json:"entrypoint"`
	Command     []string          `json:"command"`
	Environment map[string]string `json:"environment"`
	EnvFile     []string          `json:"env_file"`
	Secrets     []string          `json:"secrets"`
	Ports       []string          `json:"ports"`
	Volumes     []string          `json:"volumes"`
	DependsOn   dependsOn         `json:"depends_on"`
	Healthcheck *struct {
		Test []string `json:"test"`
	} `json:"healthcheck"`
	Profiles []string `json:"profiles"`
}

// dependsOn is compose's depends_on: a list of services or a map of
// service => {condition}.
type dependsOn map[string]string

func (d *dependsOn) UnmarshalJSON(b []byte) error {
	*d = dependsOn{}
	var list []string
	if err := json.Unmarshal(b, &list); err == nil {
		for _, s := range list {
			(*d)[s] = "service_started"
		}
		return nil
	}
	var m map[string]struct {
		Condition string `json:"condition"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("depends_on: %w", err)
	}
	for s, c := range m {
		(*d)[s] = c.Condition
	}
	return nil
}

// composeVar is compose's interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}.
var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}`)

// interpolate substitutes env into text as compose does, and reports the
// variables that must be set and are not in env.
func interpolate(text string, env map[string]string) (string, []string) {
	var missing []string
	out := composeVar.ReplaceAllStringFunc(text, func(m string) string {
		g := composeVar.FindStringSubmatch(m)
		if v, ok := env[g[1]]; ok {
			return v
		}
		switch strings.TrimPrefix(g[2], ":") {
		case "-":
			return g[3]
		case "?":
			missing = append(missing, g[1])
		}
		return ""
	})
	return out, missing
}

func TestInterpolate(t *testing.T) {
	got, missing := interpolate("a=${A} b=${B:-x} c=${C:?set C} d=${D:-y}", map[string]string{"A": "1", "D": "2"})
	if got != "a=1 b=x c= d=2" || fmt.Sprint(missing) != "[C]" {
		t.Errorf("interpolate = %q, missing %v", got, missing)
	}
}

func TestCompose(t *testing.T) {
	raw, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	// Every variable a user must set is named in the file's header.
	for _, m := range composeVar.FindAllStringSubmatch(string(raw), -1) {
		if strings.TrimPrefix(m[2], ":") == "?" && !strings.Contains(header(string(raw)), m[1]) {
			t.Errorf("%s: ${%s} must be set but the header comment does not say so", composeFile, m[1])
		}
	}
	env := map[string]string{"KAFKA_BOOTSTRAP": "kafka-1:9092,kafka-2:9092"}
	text, missing := interpolate(string(raw), env)
	if len(missing) > 0 {
		t.Fatalf("%s: required variables %v (add them to the test's env)", composeFile, missing)
	}
	var p composeProject
	if err := yaml.Unmarshal([]byte(text), &p); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	secretsDir := runSetup(t, "compose/setup.sh")
	local := func(f string) string { // a path relative to the compose file, where setup.sh put it
		f = filepath.Clean(f)
		if rest, ok := strings.CutPrefix(f, "secrets/"); ok {
			return filepath.Join(secretsDir, rest)
		}
		return filepath.Join("compose", f)
	}
	c := sluiceCLI(t)
	df := readDockerfile(t)

	// What each service is, and what it listens on.
	var etcds, coords, workers []string
	clientPort := map[string]int{} // etcd service => client port
	grpcPort := map[string]int{}   // coordinator service => gRPC port
	sluiceArgs := map[string][]string{}
	for _, name := range sortedKeys(p.Services) {
		s := p.Services[name]
		args := append(slices.Clone(s.Entrypoint), s.Command...)
		if s.Build != nil || strings.HasPrefix(s.Image, "${SLUICE_IMAGE") || strings.Contains(s.Image, "sluice") {
			if s.Build == nil {
				t.Errorf("%s: service %s runs sluice without build: it would need an image from elsewhere", composeFile, name)
			} else {
				if got, want := filepath.Clean(filepath.Join("compose", s.Build.Context)), filepath.Clean(repoRoot); got != want {
					t.Errorf("%s: service %s builds in %s, want the repository root", composeFile, name, s.Build.Context)
				}
				if s.Build.Dockerfile != "deploy/Dockerfile" {
					t.Errorf("%s: service %s builds %s, want deploy/Dockerfile", composeFile, name, s.Build.Dockerfile)
				}
			}
			if len(s.Entrypoint) > 0 {
				t.Errorf("%s: service %s replaces the image's ENTRYPOINT (sluice)", composeFile, name)
			}
			where := fmt.Sprintf("%s: service %s", composeFile, name)
			if len(args) > 0 {
				for _, e := range c.check(t, where, args) {
					t.Error(e)
				}
			}
			sluiceArgs[name] = args
			switch {
			case len(args) > 0 && args[0] == "coordinator":
				coords = append(coords, name)
				_, port, ok := hostPort(flagValue(args, "grpc-addr"))
				if !ok {
					t.Errorf("%s: no --grpc-addr host:port", where)
				}
				grpcPort[name] = port
			case len(args) > 0 && args[0] == "worker":
				workers = append(workers, name)
			}
			for _, flag := range []string{"grpc-addr", "http-addr"} {
				if v := flagValue(args, flag); v != "" {
					if _, port, ok := hostPort(v); ok && !df.expose[port] {
						t.Errorf("%s: --%s=%s, but the Dockerfile EXPOSEs %v", where, flag, v, sortedInts(df.expose))
					}
				}
			}
			continue
		}
		if len(args) > 0 && args[0] == "etcd" {
			etcds = append(etcds, name)
		}
	}
	if len(etcds) != 3 || len(coords) != 2 || len(workers) != 3 {
		t.Errorf("%s: %d etcd members %v, %d coordinators %v, %d workers %v; want 3, 2, 3", composeFile, len(etcds), etcds, len(coords), coords, len(workers), workers)
	}

	// etcd: each member names itself and every member of --initial-cluster
	// is a service, at its peer port.
	for _, name := range etcds {
		args := p.Services[name].Command
		where := fmt.Sprintf("%s: etcd service %s", composeFile, name)
		if n := flagValue(args, "name"); n != name {
			t.Errorf("%s: --name=%s, want the service name", where, n)
		}
		peerPort := urlPort(t, where, flagValue(args, "listen-peer-urls"))
		clientPort[name] = urlPort(t, where, flagValue(args, "listen-client-urls"))
		for _, f := range []struct {
			flag string
			port int
		}{{"advertise-client-urls", clientPort[name]}, {"initial-advertise-peer-urls", peerPort}} {
			if h, port := urlHostPort(t, where, flagValue(args, f.flag)); h != name || port != f.port {
				t.Errorf("%s: --%s=%s, want http://%s:%d", where, f.flag, flagValue(args, f.flag), name, f.port)
			}
		}
		members := map[string]bool{}
		for _, m := range strings.Split(flagValue(args, "initial-cluster"), ",") {
			mname, u, _ := strings.Cut(m, "=")
			members[mname] = true
			h, port := urlHostPort(t, where, u)
			if mname != h || !slices.Contains(etcds, h) {
				t.Errorf("%s: --initial-cluster member %s is not an etcd service of this file", where, m)
			} else if want := urlPort(t, where, flagValue(p.Services[h].Command, "listen-peer-urls")); port != want {
				t.Errorf("%s: --initial-cluster member %s: %s listens for peers on %d", where, m, h, want)
			}
		}
		for _, e := range etcds {
			if !members[e] {
				t.Errorf("%s: --initial-cluster lacks %s", where, e)
			}
		}
		if p.Services[name].Healthcheck == nil {
			t.Errorf("%s: no healthcheck: coordinators cannot wait until it serves", where)
		}
	}

	// tokens: names and roles; the server certificate; the CA.
	ca := readCert(t, local("secrets/ca.pem"))
	server := readCert(t, local("secrets/server.pem"))

	published := map[string]string{} // host port => service
	listening := map[int]bool{}      // ports sluice containers listen on
	for _, name := range sortedKeys(sluiceArgs) {
		s, args := p.Services[name], sluiceArgs[name]
		where := fmt.Sprintf("%s: service %s", composeFile, name)
		env := map[string]string{}
		for _, f := range s.EnvFile {
			if _, err := os.Stat(local(f)); err != nil {
				t.Errorf("%s: env_file %s: setup.sh does not make it (%v)", where, f, err)
				continue
			}
			for k, v := range envFile(t, local(f)) {
				env[k] = v
			}
		}
		for k, v := range s.Environment {
			env[k] = v
		}
		envCmd := args0(args)
		if envCmd == "" {
			envCmd = "jobs" // the CLI service: any client command
		}
		for _, e := range c.checkEnv(t, where, envCmd, sortedKeys(env)) {
			t.Error(e)
		}
		// A sluice service depends on what it dials.
		needs := func(svc, why string) {
			if _, ok := p.Services[svc]; !ok {
				t.Errorf("%s: %s names %s, which is no service of this file", where, why, svc)
			} else if _, ok := s.DependsOn[svc]; !ok {
				t.Errorf("%s: %s names %s, but depends_on lacks it", where, why, svc)
			}
		}
		for _, ep := range splitList(flagValue(args, "etcd-endpoints")) {
			h, port, ok := hostPort(ep)
			if !ok {
				t.Errorf("%s: --etcd-endpoints %s is not host:port", where, ep)
				continue
			}
			needs(h, "--etcd-endpoints")
			if want, ok := clientPort[h]; ok && port != want {
				t.Errorf("%s: --etcd-endpoints %s: %s serves clients on %d", where, ep, h, want)
			}
			if cond := s.DependsOn[h]; cond != "" && cond != "service_healthy" {
				t.Errorf("%s: depends_on %s: condition %s, want service_healthy (etcd has a healthcheck)", where, h, cond)
			}
		}
		coordFlag := flagValue(args, "coordinator")
		if coordFlag == "" && len(args) == 0 {
			coordFlag = env["SLUICE_COORDINATOR"]
		}
		if args0(args) == "worker" || len(args) == 0 {
			if coordFlag == "" {
				t.Errorf("%s: no --coordinator (or SLUICE_COORDINATOR)", where)
			}
		}
		for _, addr := range splitList(coordFlag) {
			h, port, ok := hostPort(addr)
			if !ok {
				t.Errorf("%s: coordinator %s is not host:port", where, addr)
				continue
			}
			needs(h, "--coordinator")
			if want, ok := grpcPort[h]; ok && port != want {
				t.Errorf("%s: coordinator %s: %s serves gRPC on %d", where, addr, h, want)
			}
			if err := verifies(ca, server, h); err != nil {
				t.Errorf("%s: coordinator %s: the coordinators' certificate does not verify for %s: %v", where, addr, h, err)
			}
		}
		if args0(args) == "coordinator" {
			if h, port, ok := hostPort(flagValue(args, "advertise-addr")); !ok || h != name || port != grpcPort[name] {
				t.Errorf("%s: --advertise-addr=%s, want %s:%d", where, flagValue(args, "advertise-addr"), name, grpcPort[name])
			} else if err := verifies(ca, server, h); err != nil {
				t.Errorf("%s: the certificate does not verify for its --advertise-addr: %v", where, err)
			}
		}
		// Published ports reach a port the service listens on, and no two
		// services publish one host port.
		listens := map[int]bool{}
		for _, flag := range []string{"grpc-addr", "http-addr"} {
			if _, port, ok := hostPort(flagValue(args, flag)); ok {
				listens[port] = true
				listening[port] = true
			}
		}
		for _, pub := range s.Ports {
			hport, cport, _ := strings.Cut(pub, ":")
			if other, ok := published[hport]; ok {
				t.Errorf("%s: ports %q: host port %s is published by %s too", where, pub, hport, other)
			}
			published[hport] = name
			var n int
			if _, err := fmt.Sscan(cport, &n); err != nil || !listens[n] {
				t.Errorf("%s: ports %q: the container listens on %v", where, pub, sortedInts(listens))
			}
		}
		// Files the process reads are mounted.
		var files []string
		for _, f := range fileFlags {
			files = append(files, flagValues(args, f)...)
		}
		for _, k := range []string{"SLUICE_TLS_CA", "SLUICE_TLS_CERT", "SLUICE_TLS_KEY"} {
			if env[k] != "" {
				files = append(files, env[k])
			}
		}
		for _, f := range files {
			secret, ok := strings.CutPrefix(f, "/run/secrets/")
			switch {
			case !ok:
				t.Errorf("%s: %s is not a mounted secret (/run/secrets/NAME)", where, f)
			case !slices.Contains(s.Secrets, secret):
				t.Errorf("%s: reads %s, but its secrets lack %s", where, f, secret)
			case p.Secrets[secret].File == "":
				t.Errorf("%s: secret %s is not defined at the top level", where, secret)
			default:
				if _, err := os.Stat(local(p.Secrets[secret].File)); err != nil {
					t.Errorf("%s: secret %s: setup.sh does not make %s", where, secret, p.Secrets[secret].File)
				}
			}
		}
		// Authentication: the token file holds each worker's token under
		// its --id with role worker, and the CLI's as admin.
		if tf := flagValue(args, "token-file"); tf != "" {
			if secret, ok := strings.CutPrefix(tf, "/run/secrets/"); ok && p.Secrets[secret].File != "" {
				tokens := tokenFile(t, local(p.Secrets[secret].File))
				for _, other := range sortedKeys(sluiceArgs) {
					oargs := sluiceArgs[other]
					tok := ""
					for _, f := range p.Services[other].EnvFile {
						if e, err := os.ReadFile(local(f)); err == nil {
							tok = strings.TrimPrefix(strings.TrimSpace(string(e)), "SLUICE_TOKEN=")
						}
					}
					switch args0(oargs) {
					case "worker":
						id := flagValue(oargs, "id")
						if role := tokens[id+" "+tok]; role != "worker" {
							t.Errorf("%s: service %s (--id=%s) has no token of role worker named %s in %s's --token-file (got role %q)", composeFile, other, id, id, name, role)
						}
					case "":
						found := false
						for k, role := range tokens {
							found = found || (strings.HasSuffix(k, " "+tok) && tok != "" && role == "admin")
						}
						if !found {
							t.Errorf("%s: service %s (the CLI) has no admin token of %s's --token-file", composeFile, other, name)
						}
					}
				}
			}
		}
	}
	for port := range df.expose {
		if !listening[port] {
			t.Errorf("Dockerfile: EXPOSE %d, but no sluice service of %s listens on it (they listen on %v)", port, composeFile, sortedInts(listening))
		}
	}
	for _, name := range sortedKeys(p.Secrets) {
		if _, err := os.Stat(local(p.Secrets[name].File)); err != nil {
			t.Errorf("%s: secret %s: setup.sh does not make %s", composeFile, name, p.Secrets[name].File)
		}
	}
}

func args0(args []string) string {
	if len(args) == 0 {
		return ""
	}
	return args[0]
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// header is the comment block a file starts with.
func header(text string) string {
	var b strings.Builder
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "#") {
			break
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

func urlHostPort(t *testing.T, where, u string) (string, int) {
	t.Helper()
	rest, ok := strings.CutPrefix(u, "http://")
	if !ok {
		rest, ok = strings.CutPrefix(u, "https://")
	}
	h, port, ok2 := hostPort(rest)
	if !ok || !ok2 {
		t.Errorf("%s: %q is not a URL http(s)://host:port", where, u)
	}
	return h, port
}

func urlPort(t *testing.T, where, u string) int {
	t.Helper()
	_, p := urlHostPort(t, where, u)
	return p
}
