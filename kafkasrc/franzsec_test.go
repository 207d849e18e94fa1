package kafkasrc

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// testPKI is a throwaway CA, a broker certificate for 127.0.0.1 and a
// client certificate, written as PEM files into one directory.
type testPKI struct {
	dir                   string
	ca                    *x509.CertPool
	caFile                string
	serverCert            tls.Certificate
	clientCert, clientKey string // files
	encryptedKey, keyPass string // the client key, legacy-PEM encrypted
	otherCAFile           string // a CA that signed nothing here
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir(), ca: x509.NewCertPool()}
	caKey, caCert, caDER := newCA(t, "sluice test CA")
	p.ca.AddCert(caCert)
	p.caFile = p.write(t, "ca.pem", pemBytes("CERTIFICATE", caDER))
	_, _, otherDER := newCA(t, "another CA")
	p.otherCAFile = p.write(t, "other-ca.pem", pemBytes("CERTIFICATE", otherDER))

	srvKey, srvDER := newLeaf(t, caKey, caCert, "broker", []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"}, x509.ExtKeyUsageServerAuth)
	p.serverCert = tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}

	cliKey, cliDER := newLeaf(t, caKey, caCert, "client", nil, nil, x509.ExtKeyUsageClientAuth)
	p.clientCert = p.write(t, "client.pem", pemBytes("CERTIFICATE", cliDER))
	keyDER, err := x509.MarshalPKCS8PrivateKey(cliKey)
	if err != nil {
		t.Fatal(err)
	}
	p.clientKey = p.write(t, "client.key", pemBytes("PRIVATE KEY", keyDER))
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p.keyPass = "key secret"
	//nolint:staticcheck // the legacy PEM encryption that decryptKey reads
	block, err := x509.EncryptPEMBlock(rand.Reader, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey), []byte(p.keyPass), x509.PEMCipherAES256)
	if err != nil {
		t.Fatal(err)
	}
	rsaCert := leafFor(t, caKey, caCert, "rsa client", &rsaKey.PublicKey)
	p.write(t, "rsa-client.pem", pemBytes("CERTIFICATE", rsaCert))
	p.encryptedKey = p.write(t, "rsa-client.key", pem.EncodeToMemory(block))
	return p
}

func (p *testPKI) write(t *testing.T, name string, b []byte) string {
	t.Helper()
	f := filepath.Join(p.dir, name)
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func pemBytes(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func newCA(t *testing.T, name string) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert, der
}

func newLeaf(t *testing.T, caKey *ecdsa.PrivateKey, ca *x509.Certificate, name string, ips []net.IP, dns []string, usage x509.ExtKeyUsage) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: ips, DNSNames: dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

func leafFor(t *testing.T, caKey *ecdsa.PrivateKey, ca *x509.Certificate, name string, pub any) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestFranzOptions: librdkafka's security properties become franz-go
// options; what cannot be honoured is refused, naming the property.
func TestFranzOptions(t *testing.T) {
	p := newTestPKI(t)
	saslProps := func(kv ...string) map[string]string {
		m := map[string]string{"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "u", "sasl.password": "p", "ssl.ca.location": p.caFile}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "<unset>" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		return m
	}
	tests := []struct {
		name        string
		props       map[string]string
		tls, sasl   bool
		err         string // substring of the error; "" for none
		unsupported bool
	}{
		{name: "none", props: nil},
		{name: "plaintext ignores ssl and sasl", props: map[string]string{"security.protocol": "plaintext", "ssl.cipher.suites": "x", "sasl.kerberos.service.name": "kafka"}},
		{name: "unrelated properties", props: map[string]string{"fetch.max.bytes": "1000", "client.id": "me"}},
		{name: "ssl", props: map[string]string{"security.protocol": "SSL", "ssl.ca.location": p.caFile}, tls: true},
		{name: "ssl with the system roots", props: map[string]string{"security.protocol": "ssl", "ssl.ca.location": "probe"}, tls: true},
		{name: "ssl with a CA directory", props: map[string]string{"security.protocol": "SSL", "ssl.ca.location": p.dir}, tls: true},
		{name: "ssl with inline CA", props: map[string]string{"security.protocol": "SSL", "ssl.ca.pem": string(mustRead(t, p.caFile))}, tls: true},
		{name: "mtls", props: map[string]string{"security.protocol": "SSL", "ssl.ca.location": p.caFile, "ssl.certificate.location": p.clientCert, "ssl.key.location": p.clientKey}, tls: true},
		{name: "mtls with an encrypted key", props: map[string]string{"security.protocol": "SSL", "ssl.certificate.location": filepath.Join(p.dir, "rsa-client.pem"), "ssl.key.location": p.encryptedKey, "ssl.key.password": p.keyPass}, tls: true},
		{name: "encrypted key, wrong password", props: map[string]string{"security.protocol": "SSL", "ssl.certificate.location": filepath.Join(p.dir, "rsa-client.pem"), "ssl.key.location": p.encryptedKey, "ssl.key.password": "nope"}, err: `property "ssl.key.location": decrypt the key with ssl.key.password`},
		{name: "encrypted key, no password", props: map[string]string{"security.protocol": "SSL", "ssl.certificate.location": filepath.Join(p.dir, "rsa-client.pem"), "ssl.key.location": p.encryptedKey}, err: `property "ssl.key.location": the key is encrypted: set ssl.key.password`},
		{name: "certificate without key", props: map[string]string{"security.protocol": "SSL", "ssl.certificate.location": p.clientCert}, err: `property "ssl.certificate.location": set without ssl.key.location`},
		{name: "key without certificate", props: map[string]string{"security.protocol": "SSL", "ssl.key.location": p.clientKey}, err: `property "ssl.key.location": set without ssl.certificate.location`},
		{name: "certificate and key mismatch", props: map[string]string{"security.protocol": "SSL", "ssl.certificate.location": filepath.Join(p.dir, "rsa-client.pem"), "ssl.key.location": p.clientKey}, err: `properties "ssl.certificate.location" and "ssl.key.location"`},
		{name: "missing CA file", props: map[string]string{"security.protocol": "SSL", "ssl.ca.location": filepath.Join(p.dir, "nope.pem")}, err: `property "ssl.ca.location": stat`},
		{name: "CA file without certificates", props: map[string]string{"security.protocol": "SSL", "ssl.ca.location": p.clientKey}, err: `property "ssl.ca.location": no PEM certificate`},
		{name: "bad verification flag", props: map[string]string{"security.protocol": "SSL", "enable.ssl.certificate.verification": "maybe"}, err: `property "enable.ssl.certificate.verification": "maybe" is not true or false`},
		{name: "bad endpoint identification", props: map[string]string{"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "dns"}, err: `property "ssl.endpoint.identification.algorithm": "dns" is not one of https, none`},
		{name: "unsupported ssl property", props: map[string]string{"security.protocol": "SSL", "ssl.keystore.location": "/x.p12"}, err: `property "ssl.keystore.location"`, unsupported: true},
		{name: "sasl_ssl scram-sha-256", props: saslProps(), tls: true, sasl: true},
		{name: "sasl_ssl scram-sha-512", props: saslProps("sasl.mechanism", "SCRAM-SHA-512"), tls: true, sasl: true},
		{name: "sasl_plaintext plain via sasl.mechanisms", props: map[string]string{"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN", "sasl.username": "u", "sasl.password": "p"}, sasl: true},
		{name: "both mechanism spellings agree", props: saslProps("sasl.mechanisms", "scram-sha-256"), tls: true, sasl: true},
		{name: "both mechanism spellings disagree", props: saslProps("sasl.mechanisms", "PLAIN"), err: `properties "sasl.mechanism" and "sasl.mechanisms": "SCRAM-SHA-256" and "PLAIN" disagree`},
		{name: "gssapi", props: saslProps("sasl.mechanism", "GSSAPI"), err: `property "sasl.mechanism": SASL mechanism "GSSAPI": only PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 are supported`, unsupported: true},
		{name: "oauthbearer", props: saslProps("sasl.mechanisms", "OAUTHBEARER", "sasl.mechanism", "<unset>"), err: `property "sasl.mechanisms": SASL mechanism "OAUTHBEARER"`, unsupported: true},
		{name: "default mechanism", props: saslProps("sasl.mechanism", "<unset>"), err: `SASL mechanism GSSAPI (librdkafka's default when it is not set)`, unsupported: true},
		{name: "no username", props: saslProps("sasl.username", "<unset>"), err: `property "sasl.username": required by SASL mechanism SCRAM-SHA-256`},
		{name: "unsupported sasl property", props: saslProps("sasl.oauthbearer.config", "x"), err: `property "sasl.oauthbearer.config"`, unsupported: true},
		{name: "unknown protocol", props: map[string]string{"security.protocol": "TLS"}, err: `property "security.protocol": "TLS" is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := franzOptions(tc.props)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				if got := errors.Is(err, ErrUnsupportedProperty); got != tc.unsupported {
					t.Errorf("errors.Is(%v, ErrUnsupportedProperty) = %v, want %v", err, got, tc.unsupported)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers("127.0.0.1:1"))...)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			if got := cl.OptValue(kgo.DialTLSConfig) != (*tls.Config)(nil); got != tc.tls {
				t.Errorf("TLS %v, want %v", got, tc.tls)
			}
			if ms, _ := cl.OptValue(kgo.SASL).([]sasl.Mechanism); (len(ms) > 0) != tc.sasl {
				t.Errorf("SASL %v, want %v", ms, tc.sasl)
			}
		})
	}
}

func mustRead(t *testing.T, f string) []byte {
	t.Helper()
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newSecureCluster starts kfake with a SASL_SSL listener (SCRAM-SHA-256,
// user "sluice"; PLAIN, user "app", password "right") with serverCert;
// with mtls it requires a client certificate p's CA signed.
func newSecureCluster(t *testing.T, p *testPKI, serverCert tls.Certificate, mtls bool, topics ...string) *kfake.Cluster {
	t.Helper()
	cfg := &tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}
	if mtls {
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, p.ca
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, topics...), kfake.TLS(cfg),
		kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "sluice", "s3cret"), kfake.Superuser("PLAIN", "app", "right"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	answerFailedPlain(c, map[string]string{"app": "right"})
	return c
}

// answerFailedPlain makes kfake refuse wrong PLAIN credentials as a Kafka
// broker does, with SASL_AUTHENTICATION_FAILED (KIP-152): kfake closes the
// connection without an answer, which a client can only retry.
func answerFailedPlain(c *kfake.Cluster, users map[string]string) {
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r := req.(*kmsg.SASLAuthenticateRequest)
		parts := bytes.Split(r.SASLAuthBytes, []byte{0}) // PLAIN: authzid, user, password
		if len(parts) != 3 || users[string(parts[1])] == string(parts[2]) {
			return nil, nil, false
		}
		resp := r.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := "Authentication failed: Invalid username or password"
		resp.ErrorMessage = &msg
		return resp, nil, true
	})
}

// TestSecureConnections connects franz-go clients, the planner's included,
// to a SASL_SSL broker the way the properties say, and checks that wrong
// credentials, an unknown CA or a host name the certificate does not name
// are refused.
func TestSecureConnections(t *testing.T) {
	p := newTestPKI(t)
	// A broker certificate without the broker's address in it: only
	// ssl.endpoint.identification.algorithm=none accepts it.
	caKey, caCert := addSecondCA(t, p)
	noIPKey, noIPDER := newLeaf(t, caKey, caCert, "broker", nil, []string{"elsewhere.invalid"}, x509.ExtKeyUsageServerAuth)
	good := newSecureCluster(t, p, p.serverCert, true, "in")
	noIP := newSecureCluster(t, p, tls.Certificate{Certificate: [][]byte{noIPDER}, PrivateKey: noIPKey}, false, "in")
	props := func(kv ...string) map[string]string {
		m := map[string]string{
			"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "sluice", "sasl.password": "s3cret",
			"ssl.ca.location": p.caFile, "ssl.certificate.location": p.clientCert, "ssl.key.location": p.clientKey,
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		cluster *kfake.Cluster
		props   map[string]string
		err     string
	}{
		{"sasl_ssl with a client certificate", good, props(), ""},
		{"plain", good, props("sasl.mechanism", "PLAIN", "sasl.username", "app", "sasl.password", "right"), ""},
		{"wrong password", good, props("sasl.mechanism", "PLAIN", "sasl.username", "app", "sasl.password", "wrong"), "SASL_AUTHENTICATION_FAILED"},
		{"unknown CA", good, props("ssl.ca.location", p.otherCAFile), "certificate signed by unknown authority"},
		{"no client certificate for a broker that asks for none", noIP, props("ssl.endpoint.identification.algorithm", "none", "ssl.certificate.location", "", "ssl.key.location", ""), ""},
		{"host name not in the certificate", noIP, props(), "certificate for 127.0.0.1 because it doesn't contain any IP SANs"},
		{"host name not checked", noIP, props("ssl.endpoint.identification.algorithm", "none"), ""},
		{"host name not checked, unknown CA", noIP, props("ssl.endpoint.identification.algorithm", "none", "ssl.ca.location", p.otherCAFile), "certificate signed by unknown authority"},
		{"no verification", noIP, props("enable.ssl.certificate.verification", "false", "ssl.ca.location", p.otherCAFile), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.props {
				if v == "" {
					delete(tc.props, k)
				}
			}
			c := Cluster{Bootstrap: tc.cluster.ListenAddrs()[0], Properties: tc.props}
			cl, err := newPlanClient(c, testLogger(t))
			if err != nil || cl == nil {
				t.Fatalf("plan client %v, %v: want a franz-go client", cl, err)
			}
			a := &Admin{cluster: c, plan: cl}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			parts, err := a.kgoPartitions(ctx, []string{"in"})
			if tc.err == "" {
				if err != nil || len(parts["in"]) != 2 {
					t.Fatalf("partitions %v, %v: want 2 partitions", parts, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
			if tc.err == "SASL_AUTHENTICATION_FAILED" && !errors.Is(err, ErrPermanent) {
				t.Errorf("wrong credentials: %v is not permanent", err)
			}
		})
	}
}

func addSecondCA(t *testing.T, p *testPKI) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	// newTestPKI keeps no CA key: make a sibling CA the pool also trusts.
	key, cert, _ := newCA(t, "second sluice test CA")
	p.ca.AddCert(cert)
	b := append(mustRead(t, p.caFile), pemBytes("CERTIFICATE", cert.Raw)...)
	if err := os.WriteFile(p.caFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return key, cert
}

// TestListTransactionsSecured: txn list connects with the cluster's TLS and
// SASL properties, and refuses what it cannot honour, naming the property.
func TestListTransactionsSecured(t *testing.T) {
	p := newTestPKI(t)
	k := newSecureCluster(t, p, p.serverCert, false, "out")
	bootstrap := k.ListenAddrs()[0]
	props := map[string]string{
		"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "sluice", "sasl.password": "s3cret",
		"ssl.ca.location": p.caFile,
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.TransactionalID("job:out:0"),
		kgo.DialTLSConfig(&tls.Config{RootCAs: p.ca, MinVersion: tls.VersionTLS12}),
		kgo.SASL(scramAuth("sluice", "s3cret")), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "out", Partition: 1, Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	got, err := ListTransactions(ctx, Cluster{Bootstrap: bootstrap, Properties: props}, "job:")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != "job:out:0" || got[0].State != "Ongoing" || strings.Join(got[0].Partitions, ",") != "out/1" {
		t.Fatalf("ListTransactions = %+v, want job:out:0 Ongoing on out/1", got)
	}

	for _, tc := range []struct {
		name string
		kv   []string
		err  string
		is   error
	}{
		{"unsupported mechanism", []string{"sasl.mechanism", "GSSAPI"}, `property "sasl.mechanism": SASL mechanism "GSSAPI"`, ErrUnsupportedProperty},
		{"wrong password", []string{"sasl.mechanism", "PLAIN", "sasl.username", "app", "sasl.password", "wrong"}, "SASL_AUTHENTICATION_FAILED", ErrPermanent},
	} {
		bad := map[string]string{}
		for k, v := range props {
			bad[k] = v
		}
		for i := 0; i+1 < len(tc.kv); i += 2 {
			bad[tc.kv[i]] = tc.kv[i+1]
		}
		_, err := ListTransactions(ctx, Cluster{Bootstrap: bootstrap, Properties: bad}, "job:")
		if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, tc.is) {
			t.Errorf("%s: error %v, want one containing %q and wrapping %v", tc.name, err, tc.err, tc.is)
		}
	}
}

func scramAuth(user, pass string) sasl.Mechanism {
	return scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
}
