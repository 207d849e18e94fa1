package deploy_test

import (
	"bufio"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// runSetup runs a setup script (compose/setup.sh, k8s/setup.sh) with its
// output in a temporary directory, which it returns: the files the
// manifests mount must be the ones it makes.
func runSetup(t *testing.T, script string) string {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("%s needs openssl, which is not on PATH", script)
	}
	dir := filepath.Join(t.TempDir(), "secrets")
	cmd := exec.Command("bash", script)
	cmd.Env = append(os.Environ(), "SECRETS_DIR="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return dir
}

func readCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", file)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return c
}

// verifies says whether cert, signed by ca, is valid for a TLS client
// dialling host (a server certificate) or, with host "", for client
// authentication.
func verifies(ca, cert *x509.Certificate, host string) error {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	usage := x509.ExtKeyUsageServerAuth
	if host == "" {
		usage = x509.ExtKeyUsageClientAuth
	}
	_, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: host, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

// tokenFile reads a coordinator token file: name => role.
func tokenFile(t *testing.T, file string) map[string]string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	roles := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if w := strings.Fields(line); len(w) == 3 {
			roles[w[1]+" "+w[2]] = w[0]
		}
	}
	return roles
}

// envFile reads KEY=VALUE lines (# comments), as systemd's EnvironmentFile
// and compose's env_file do for plain values.
func envFile(t *testing.T, file string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s: %q is not KEY=VALUE", file, line)
			continue
		}
		env[k] = strings.Trim(v, `"'`)
	}
	return env
}

// flagValues returns the values of --name=value (and --name value) in a
// command line; repeated flags give several.
func flagValues(args []string, name string) []string {
	var vals []string
	for i := 0; i < len(args); i++ {
		a := strings.TrimLeft(args[i], "-")
		if !strings.HasPrefix(args[i], "-") {
			continue
		}
		if k, v, ok := strings.Cut(a, "="); ok && k == name {
			vals = append(vals, v)
		} else if a == name && i+1 < len(args) {
			vals = append(vals, args[i+1])
		}
	}
	return vals
}

func flagValue(args []string, name string) string {
	v := flagValues(args, name)
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// hostPort splits host:port; ok is false when it is not one.
func hostPort(addr string) (host string, port int, ok bool) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, false
	}
	n, err := strconv.Atoi(p)
	return h, n, err == nil
}

// fileFlags are the flags whose values are files the process reads.
var fileFlags = []string{"tls-cert", "tls-key", "tls-ca", "tls-client-ca", "token-file", "jwt-public-key", "etcd-ca", "etcd-cert", "etcd-key", "kafka-file-dir"}
