package deploy_test

import (
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

type instruction struct {
	line int
	cmd  string // upper case: FROM, RUN, ...
	args string
}

type stage struct {
	name, image string
	ins         []instruction
}

// parseDockerfile reads a Dockerfile's instructions by stage: comments and
// blank lines dropped, continuation lines (trailing \) joined.
func parseDockerfile(text string) (args map[string]string, stages []*stage, err error) {
	args = map[string]string{}
	var cur strings.Builder
	start := 0
	flush := func() error {
		s := strings.TrimSpace(cur.String())
		cur.Reset()
		if s == "" {
			return nil
		}
		cmd, rest, _ := strings.Cut(s, " ")
		in := instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(rest)}
		switch {
		case in.cmd == "FROM":
			f := strings.Fields(in.args)
			st := &stage{image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
		case len(stages) == 0 && in.cmd == "ARG":
			k, v, _ := strings.Cut(in.args, "=")
			args[k] = v
			return nil
		case len(stages) == 0:
			return fmt.Errorf("line %d: %s before FROM", in.line, in.cmd)
		}
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
		return nil
	}
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		if err := flush(); err != nil {
			return nil, nil, err
		}
	}
	return args, stages, flush()
}

// expand replaces ${NAME} and $NAME with vars[NAME].
func expand(s string, vars map[string]string) string {
	return os.Expand(s, func(k string) string { return vars[k] })
}

// dockerfile is deploy/Dockerfile, parsed, with what the other manifests
// need from it.
type dockerfile struct {
	args   map[string]string
	stages []*stage
	expose map[int]bool
}

func readDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	args, stages, err := parseDockerfile(string(b))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	d := &dockerfile{args: args, stages: stages, expose: map[int]bool{}}
	if len(stages) == 0 {
		t.Fatal("Dockerfile: no FROM")
	}
	for _, in := range stages[len(stages)-1].ins {
		if in.cmd != "EXPOSE" {
			continue
		}
		for _, p := range strings.Fields(in.args) {
			n, err := strconv.Atoi(strings.TrimSuffix(p, "/tcp"))
			if err != nil {
				t.Errorf("Dockerfile line %d: EXPOSE %s is not a TCP port", in.line, p)
				continue
			}
			d.expose[n] = true
		}
	}
	return d
}

func TestDockerfile(t *testing.T) {
	d := readDockerfile(t)
	if len(d.stages) < 2 {
		t.Fatalf("Dockerfile: %d stage(s); want a builder and a runtime stage", len(d.stages))
	}
	byName := map[string]*stage{}
	for _, s := range d.stages {
		if s.name != "" {
			byName[s.name] = s
		}
	}

	// The builder: go build of the package `make build` builds, cgo on,
	// gcc installed, the Go of go.mod.
	var builder *stage
	var out string
	for _, s := range d.stages[:len(d.stages)-1] {
		for _, in := range s.ins {
			if in.cmd != "RUN" || !strings.Contains(in.args, "go build") {
				continue
			}
			builder = s
			words := shellWords(in.args)
			if pkg, want := goBuildPackage(words), makeBuildPackage(); pkg != want {
				t.Errorf("Dockerfile line %d: go build builds %q, `make build` builds %q", in.line, pkg, want)
			}
			for i, w := range words {
				if w == "-o" && i+1 < len(words) {
					out = words[i+1]
				}
				if w == "CGO_ENABLED=0" {
					t.Errorf("Dockerfile line %d: CGO_ENABLED=0: the Kafka clients need cgo (bundled librdkafka)", in.line)
				}
			}
		}
	}
	if builder == nil {
		t.Fatal("Dockerfile: no stage before the last runs go build")
	}
	if out == "" {
		t.Fatal("Dockerfile: go build has no -o: the runtime stage cannot copy a known path")
	}
	if !installs(builder, "gcc") {
		t.Errorf("Dockerfile: the builder stage (%s) installs no gcc, which cgo needs", builder.image)
	}
	for _, in := range builder.ins {
		if (in.cmd == "ENV" || in.cmd == "ARG") && regexp.MustCompile(`CGO_ENABLED[= ]+0\b`).MatchString(in.args) {
			t.Errorf("Dockerfile line %d: %s %s: the Kafka clients need cgo", in.line, in.cmd, in.args)
		}
	}
	image := expand(builder.image, d.args)
	if !strings.HasPrefix(image, "golang:") {
		t.Errorf("Dockerfile: the builder is %s, want the golang image", image)
	}
	if want := goModVersion(t); !strings.HasPrefix(strings.TrimPrefix(image, "golang:"), want) {
		t.Errorf("Dockerfile: the builder is %s; go.mod wants Go %s", image, want)
	}

	// The runtime: slim, CA certificates, the binary copied from the
	// builder, a non-root user, ENTRYPOINT sluice.
	rt := d.stages[len(d.stages)-1]
	if img := expand(rt.image, d.args); strings.HasPrefix(img, "golang") {
		t.Errorf("Dockerfile: the runtime stage is %s; want a slim image without the toolchain", img)
	}
	if !installs(rt, "ca-certificates") {
		t.Error("Dockerfile: the runtime stage installs no ca-certificates")
	}
	binPath := ""
	user := ""
	var entry []string
	for _, in := range rt.ins {
		switch in.cmd {
		case "COPY":
			f := strings.Fields(in.args)
			if len(f) == 3 && strings.HasPrefix(f[0], "--from=") {
				from := strings.TrimPrefix(f[0], "--from=")
				if byName[from] != builder {
					t.Errorf("Dockerfile line %d: COPY --from=%s, want the builder stage %q", in.line, from, builder.name)
				}
				if f[1] != out {
					t.Errorf("Dockerfile line %d: copies %s, but go build writes %s", in.line, f[1], out)
				}
				binPath = f[2]
				if strings.HasSuffix(binPath, "/") {
					binPath = path.Join(binPath, path.Base(out))
				}
			}
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(in.args), &entry); err != nil {
				t.Errorf("Dockerfile line %d: ENTRYPOINT %s is not the exec form (a JSON array): signals would go to a shell", in.line, in.args)
			}
		}
	}
	if binPath == "" {
		t.Error("Dockerfile: the runtime stage copies no binary from the builder")
	}
	if len(entry) == 0 || entry[0] != binPath || path.Base(binPath) != "sluice" {
		t.Errorf("Dockerfile: ENTRYPOINT %v, want [%s] (the copied sluice)", entry, binPath)
	}
	if u, _, _ := strings.Cut(user, ":"); u == "" || u == "root" || u == "0" {
		t.Errorf("Dockerfile: USER %q: the runtime must not run as root", user)
	}
	if len(d.expose) == 0 {
		t.Error("Dockerfile: no EXPOSE")
	}
	// The exposed ports are the defaults' ports of the servers' listen flags
	// and the ports the compose and Kubernetes examples listen on (checked
	// there).
	if !d.expose[7070] {
		t.Errorf("Dockerfile: EXPOSE %v lacks 7070, the port of --grpc-addr's default", sortedInts(d.expose))
	}

	// The slim runtime has glibc's libraries (package libc6) and no
	// others: the binary (librdkafka linked in statically) needs no more.
	libc6 := regexp.MustCompile(`^(libc|libm|libpthread|libdl|librt|libresolv|ld-linux-[a-z0-9-]+|ld-linux)\.so\.[0-9.]+$`)
	bin, err := elf.Open(sluiceCLI(t).bin)
	if err != nil {
		t.Fatal(err)
	}
	defer bin.Close()
	libs, err := bin.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range libs {
		if !libc6.MatchString(l) {
			t.Errorf("sluice needs %s, which the runtime image (%s) does not install", l, expand(rt.image, d.args))
		}
	}

	// The build context is the repository root: nothing the build needs
	// may be ignored.
	ig, err := os.ReadFile("Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(ig), "\n") {
		p := strings.TrimSpace(line)
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		for _, need := range []string{"go.mod", "go.sum", strings.TrimPrefix(makeBuildPackage(), "./")} {
			if ok, _ := filepath.Match(p, need); ok || p == need || strings.HasPrefix(need, p+"/") {
				t.Errorf("Dockerfile.dockerignore: %q leaves %s out of the build context", p, need)
			}
		}
	}
}

// installs says whether a RUN of s installs pkg with apt-get or apk.
func installs(s *stage, pkg string) bool {
	for _, in := range s.ins {
		if in.cmd != "RUN" || !(strings.Contains(in.args, "apt-get install") || strings.Contains(in.args, "apk add")) {
			continue
		}
		for _, w := range shellWords(in.args) {
			if w == pkg {
				return true
			}
		}
	}
	return false
}

// goModVersion is go.mod's go version as major.minor.
func goModVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod: no go line")
	}
	return string(m[1])
}

func sortedInts(m map[int]bool) []int {
	s := make([]int, 0, len(m))
	for k := range m {
		s = append(s, k)
	}
	sort.Ints(s)
	return s
}

// shellWords splits a command line as a POSIX shell would, for the quoting
// manifests use: '...', "..." and backslash escapes; operators such as &&
// stay words of their own when spaced.
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '\'':
			inWord = true
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				j = len(s) - i - 1
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
		case ch == '"':
			inWord = true
			for i++; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte(`"\$`+"`", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
		case ch == '\\' && i+1 < len(s):
			inWord = true
			i++
			cur.WriteByte(s[i])
		case ch == ' ' || ch == '\t' || ch == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			inWord = true
			cur.WriteByte(ch)
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

func TestShellWords(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{`CGO_ENABLED=1 go build -ldflags="-s -w" -o /out/sluice ./cmd/sluice`, []string{"CGO_ENABLED=1", "go", "build", "-ldflags=-s -w", "-o", "/out/sluice", "./cmd/sluice"}},
		{`a 'b c' "d \"e\"" f\ g`, []string{"a", "b c", `d "e"`, "f g"}},
		{`apt-get update && apt-get install -y gcc`, []string{"apt-get", "update", "&&", "apt-get", "install", "-y", "gcc"}},
		{`x ''`, []string{"x", ""}},
	} {
		if got := shellWords(tc.in); fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tc.want) {
			t.Errorf("shellWords(%s) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
