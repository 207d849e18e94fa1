package kafkasrc

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPolicyCheckProperties(t *testing.T) {
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	outside := t.TempDir()
	for _, f := range []string{filepath.Join(certs, "ca.pem"), filepath.Join(outside, "key.pem")} {
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("pem"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A link inside the directory to a file outside it, and one to a file
	// inside it.
	if err := os.Symlink(filepath.Join(outside, "key.pem"), filepath.Join(certs, "escape.pem")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(certs, "ca.pem"), filepath.Join(certs, "link.pem")); err != nil {
		t.Fatal(err)
	}
	withDir := Policy{FileDir: certs}
	tests := []struct {
		name    string
		policy  Policy
		props   map[string]string
		wantErr []string // substrings of the error; nil = allowed
	}{
		{name: "none", props: nil},
		{name: "security and sizes", props: map[string]string{
			"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "u", "sasl.password": "p",
			"fetch.max.bytes": "52428800", "linger.ms": "5", "compression.type": "zstd", "client.id": "me", "acks": "all",
			"isolation.level": "read_committed", "transaction.timeout.ms": "60000", "socket.timeout.ms": "1000",
		}},
		{name: "code: plugin.library.paths", props: map[string]string{"plugin.library.paths": "/tmp/evil.so"},
			wantErr: []string{`"plugin.library.paths"`, "loads shared libraries", "--allow-kafka-property plugin.library.paths"}},
		{name: "code: ssl.engine.location", props: map[string]string{"ssl.engine.location": "/tmp/e.so"},
			wantErr: []string{`"ssl.engine.location"`, "OpenSSL engine"}},
		{name: "code: ssl.providers", props: map[string]string{"ssl.providers": "legacy"},
			wantErr: []string{`"ssl.providers"`, "providers"}},
		{name: "command: sasl.kerberos.kinit.cmd", props: map[string]string{"sasl.kerberos.kinit.cmd": "touch /tmp/x"},
			wantErr: []string{`"sasl.kerberos.kinit.cmd"`, "shell command"}},
		{name: "URL: oauthbearer token endpoint", props: map[string]string{"sasl.oauthbearer.token.endpoint.url": "http://169.254.169.254/"},
			wantErr: []string{`"sasl.oauthbearer.token.endpoint.url"`, "URL"}},
		{name: "operator allows code", policy: Policy{Allow: []string{"plugin.library.paths"}},
			props: map[string]string{"plugin.library.paths": "/opt/plugins/monitor.so"}},
		{name: "operator allows another property only", policy: Policy{Allow: []string{"ssl.providers"}},
			props: map[string]string{"plugin.library.paths": "/x.so"}, wantErr: []string{`"plugin.library.paths"`}},
		{name: "unknown name", props: map[string]string{"fetch.max.byte": "1"},
			wantErr: []string{`"fetch.max.byte"`, "not a Kafka client property"}},
		{name: "operator allows an unknown name", policy: Policy{Allow: []string{"debug"}}, props: map[string]string{"debug": "broker"}},
		{name: "cap exceeded", props: map[string]string{"fetch.max.bytes": "2147483647"},
			wantErr: []string{`"fetch.max.bytes"`, "2147483647 is above the maximum 268435456"}},
		{name: "at the cap", props: map[string]string{"fetch.max.bytes": "268435456", "queued.max.messages.kbytes": "1048576"}},
		{name: "linger cap", props: map[string]string{"linger.ms": "900000"}, wantErr: []string{`"linger.ms"`, "maximum 10000"}},
		{name: "batch.size cap", props: map[string]string{"batch.size": "1000000000"}, wantErr: []string{`"batch.size"`, "maximum 268435456"}},
		{name: "queue kbytes cap", props: map[string]string{"queued.max.messages.kbytes": "2097151"}, wantErr: []string{`"queued.max.messages.kbytes"`, "maximum 1048576"}},
		{name: "capped not a number", props: map[string]string{"message.max.bytes": "lots"}, wantErr: []string{`"message.max.bytes"`, "not an integer"}},
		{name: "file without a dir", props: map[string]string{"ssl.ca.location": filepath.Join(certs, "ca.pem")},
			wantErr: []string{`"ssl.ca.location"`, "--kafka-file-dir"}},
		{name: "file inside the dir", policy: withDir, props: map[string]string{"ssl.ca.location": filepath.Join(certs, "ca.pem")}},
		{name: "symlink inside the dir", policy: withDir, props: map[string]string{"ssl.certificate.location": filepath.Join(certs, "link.pem")}},
		{name: "ca probe", props: map[string]string{"ssl.ca.location": "probe"}},
		{name: "file outside the dir", policy: withDir, props: map[string]string{"ssl.key.location": filepath.Join(outside, "key.pem")},
			wantErr: []string{`"ssl.key.location"`, "is outside"}},
		{name: "dot-dot escape", policy: withDir, props: map[string]string{"ssl.key.location": certs + "/../../etc/passwd"},
			wantErr: []string{`"ssl.key.location"`, "is outside"}},
		{name: "symlink escape", policy: withDir, props: map[string]string{"ssl.key.location": filepath.Join(certs, "escape.pem")},
			wantErr: []string{`"ssl.key.location"`, "leads outside"}},
		{name: "relative path", policy: withDir, props: map[string]string{"ssl.crl.location": "certs/ca.pem"},
			wantErr: []string{`"ssl.crl.location"`, "not an absolute path"}},
		{name: "missing file", policy: withDir, props: map[string]string{"ssl.keystore.location": filepath.Join(certs, "none.p12")},
			wantErr: []string{`"ssl.keystore.location"`, "does not exist"}},
		{name: "the first refused by name", props: map[string]string{"zzz": "1", "plugin.library.paths": "x", "client.id": "a"},
			wantErr: []string{`"plugin.library.paths"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.policy.CheckProperties(tc.props)
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("CheckProperties(%v) = %v, want nil", tc.props, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckProperties(%v) = nil, want an error with %q", tc.props, tc.wantErr)
			}
			if !errors.Is(err, ErrRefusedProperty) {
				t.Errorf("error %v does not wrap ErrRefusedProperty", err)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestPolicyCheckBootstrap(t *testing.T) {
	p := Policy{Bootstrap: []string{"kafka-1:9092", "kafka-2:9092"}}
	tests := []struct {
		policy  Policy
		servers string
		wantErr string
	}{
		{Policy{}, "anywhere:1", ""},
		{p, "kafka-1:9092", ""},
		{p, "kafka-2:9092, KAFKA-1:9092", ""},
		{p, "kafka-1:9093", `"kafka-1:9093" is not one of the allowed bootstrap servers (kafka-1:9092,kafka-2:9092)`},
		{p, "kafka-1:9092,evil:9092", `"evil:9092"`},
	}
	for _, tc := range tests {
		err := tc.policy.CheckBootstrap(tc.servers)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("CheckBootstrap(%q) = %v, want nil", tc.servers, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("CheckBootstrap(%q) = %v, want an error with %q", tc.servers, err, tc.wantErr)
		}
	}
}

func TestIsSecret(t *testing.T) {
	for name, want := range map[string]bool{
		"sasl.password": true, "ssl.key.password": true, "ssl.keystore.password": true,
		"sasl.oauthbearer.client.secret": true, "ssl.key.pem": true, "my.api.token": true, "x.Credentials": true,
		"sasl.username": false, "security.protocol": false, "ssl.key.location": false, "client.id": false,
	} {
		if got := IsSecret(name); got != want {
			t.Errorf("IsSecret(%q) = %v, want %v", name, got, want)
		}
	}
}

// An AdminPool with a check makes no client for a refused cluster.
func TestAdminPoolCheck(t *testing.T) {
	pool := NewAdminPool(nil, WithCheck(Policy{}.CheckCluster))
	defer pool.Close()
	_, err := pool.Get(Cluster{Bootstrap: "127.0.0.1:1", Properties: map[string]string{"plugin.library.paths": "/nonexistent.so"}})
	if !errors.Is(err, ErrRefusedProperty) || !strings.Contains(err.Error(), "plugin.library.paths") {
		t.Fatalf("Get = %v, want the property refused", err)
	}
	if pool.Len() != 0 {
		t.Errorf("pool holds %d admins, want 0", pool.Len())
	}
}

// Every property that the repository's own code and tests hand to
// librdkafka as a user property passes the policy (the ones Sluice sets
// itself are refused by ValidateProperties instead).
func TestPolicyAllowsPropertiesInUse(t *testing.T) {
	for _, name := range []string{
		"fetch.max.bytes", "queued.max.messages.kbytes", "client.id", "queued.min.messages", "max.partition.fetch.bytes",
		"message.max.bytes", "compression.type", "security.protocol", "queue.buffering.max.messages", "linger.ms",
		"fetch.wait.max.ms", "sasl.mechanism", "queue.buffering.max.kbytes", "message.timeout.ms", "log.connection.close",
		"fetch.queue.backoff.ms", "enable.metrics.push", "fetch.message.max.bytes", "socket.timeout.ms",
		"reconnect.backoff.max.ms", "broker.address.family",
	} {
		if _, ok := propertyRules[name]; !ok {
			t.Errorf("%s is not on the allow-list", name)
		}
	}
}

func TestCheckSchemaRegistry(t *testing.T) {
	p := Policy{SchemaRegistries: []string{"https://registry.internal:8081", "http://10.0.0.5"}}
	for _, c := range []struct {
		url string
		ok  bool
	}{
		{"https://registry.internal:8081", true},
		{"https://REGISTRY.internal:8081/path", true},
		{"http://10.0.0.5:80", true},
		{"http://registry.internal:8081", false}, // another scheme
		{"https://registry.internal", false},     // another port
		{"https://evil.example:8081", false},
	} {
		err := p.CheckSchemaRegistry(c.url)
		if (err == nil) != c.ok {
			t.Errorf("CheckSchemaRegistry(%s) = %v, want ok %v", c.url, err, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "not one of the allowed schema registries") {
			t.Errorf("CheckSchemaRegistry(%s) = %v", c.url, err)
		}
	}
	if err := (Policy{}).CheckSchemaRegistry("http://any:1"); err != nil {
		t.Errorf("empty policy: %v", err)
	}
}
