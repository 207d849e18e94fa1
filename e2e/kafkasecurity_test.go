package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-stream/sluice/coordinator"
	"github.com/sluice-stream/sluice/jobspec"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/sluice-stream/sluice/worker"
)

// kafkaPKI is a throwaway CA with a broker certificate for 127.0.0.1 and a
// client certificate. Every file a job's properties name (CA, client
// certificate, key) is in dir, the one directory an operator would allow
// file properties from.
type kafkaPKI struct {
	dir                       string
	server                    *tls.Config
	client                    *tls.Config
	caFile, certFile, keyFile string
}

func newKafkaPKI(t *testing.T) *kafkaPKI {
	t.Helper()
	p := &kafkaPKI{dir: t.TempDir()}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sluice e2e kafka CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage, ips []net.IP, dns []string) tls.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: ips, DNSNames: dns,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	// The broker's address is 127.0.0.1: an IP SAN for Go, and the same
	// as a DNS name for OpenSSL's host check.
	srv := leaf(2, "kfake", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost", "127.0.0.1"})
	cli := leaf(3, "sluice", x509.ExtKeyUsageClientAuth, nil, nil)
	p.server = &tls.Config{Certificates: []tls.Certificate{srv}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS12}
	p.client = &tls.Config{Certificates: []tls.Certificate{cli}, RootCAs: pool, MinVersion: tls.VersionTLS12}

	keyDER, err := x509.MarshalPKCS8PrivateKey(cli.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		f := filepath.Join(p.dir, name)
		if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	p.caFile = write("ca.pem", "CERTIFICATE", caDER)
	p.certFile = write("client.pem", "CERTIFICATE", cli.Certificate[0])
	p.keyFile = write("client.key", "PRIVATE KEY", keyDER)
	return p
}

// props are a job's librdkafka properties for the SASL_SSL listener.
func (p *kafkaPKI) props(mechanism, user, pass string) map[string]string {
	return map[string]string{
		"security.protocol": "SASL_SSL", "sasl.mechanism": mechanism,
		"sasl.username": user, "sasl.password": pass,
		"ssl.ca.location": p.caFile, "ssl.certificate.location": p.certFile, "ssl.key.location": p.keyFile,
	}
}

// kgoOpts are the options of the tests' own franz-go clients, the ground
// truth, which connect with the TLS config directly.
func (p *kafkaPKI) kgoOpts(brokers string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(brokers), kgo.DialTLSConfig(p.client.Clone()),
		kgo.SASL(scram.Auth{User: "sluice", Pass: "s3cret"}.AsSha256Mechanism()),
	}
}

// refuseWrongPlain makes kfake refuse wrong PLAIN credentials as a Kafka
// broker does, answering SASL_AUTHENTICATION_FAILED (KIP-152): kfake itself
// closes the connection without an answer, which a client can only retry.
func refuseWrongPlain(c *kfake.Cluster, users map[string]string) {
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

// logWatch is a log sink that tells when a line containing a string was
// written.
type logWatch struct {
	t    testing.TB
	mu   sync.Mutex
	want map[string]chan struct{}
}

func (w *logWatch) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	w.mu.Lock()
	defer w.mu.Unlock()
	for s, ch := range w.want {
		if bytes.Contains(p, []byte(s)) {
			close(ch)
			delete(w.want, s)
		}
	}
	return len(p), nil
}

func (w *logWatch) on(s string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch := make(chan struct{})
	w.want[s] = ch
	return ch
}

// TestKafkaSASLSSL runs a job that reads from a SASL_SSL listener (SCRAM-
// SHA-256, client certificates required) and writes to it with the
// transactional sink: the output is exactly the ground truth. txn list and
// txn abort reach the same listener through the JobService, and stopping
// the job aborts its open transaction there. A job with a wrong password
// fails alone, saying so.
func TestKafkaSASLSSL(t *testing.T) {
	const in, out, parts, n = "sec-in", "sec-out", 2, 1000
	pki := newKafkaPKI(t)
	// The next transaction after hold is set waits before its commit until
	// release is closed: an open transaction for txn list and stop.
	var hold atomic.Bool
	held, release := make(chan string, parts), make(chan struct{})
	defer close(release)
	watch := &logWatch{t: t, want: map[string]chan struct{}{}}
	tc := newTestCluster(t, clusterOptions{
		workers: 1, partitions: parts, topics: []string{in, out},
		kafka: []kfake.Opt{
			kfake.TLS(pki.server), kfake.EnableSASL(),
			kfake.Superuser("SCRAM-SHA-256", "sluice", "s3cret"), kfake.Superuser("PLAIN", "app", "right"),
		},
		coord: func(c *coordinator.Config) {
			c.Logger = hclog.New(&hclog.LoggerOptions{Name: "coordinator", Level: hclog.Info, Output: watch})
			c.KafkaPolicy.FileDir = pki.dir // the operator's --kafka-file-dir
		},
		worker: func(c *worker.Config) {
			c.BeforeCommit = func(task *sluicev1.Task) {
				if hold.CompareAndSwap(true, false) {
					held <- fmt.Sprintf("%s/%d", task.GetRange().GetTopic(), task.GetRange().GetPartition())
					<-release
				}
			}
		},
	})
	refuseWrongPlain(tc.Kafka, map[string]string{"app": "right"})
	ctx := context.Background()

	o := newOrders()
	produceSecure(t, pki, tc.Brokers, o, in, parts, n)
	spec := sinkJob("secure", tc.Brokers, in, out, sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_TRANSACTIONAL)
	spec.Source.Properties = pki.props("SCRAM-SHA-256", "sluice", "s3cret")
	// The sink's own bootstrap servers: the sink's properties alone say how
	// its clients connect.
	spec.Sink.GetKafka().BootstrapServers = tc.Brokers
	spec.Sink.GetKafka().Properties = pki.props("SCRAM-SHA-256", "sluice", "s3cret")
	spec.Sink.GetKafka().Properties["compression.type"] = "lz4"
	bad := sinkJob("wrong-password", tc.Brokers, in, out, sluicev1.KafkaSinkMode_KAFKA_SINK_MODE_TRANSACTIONAL)
	bad.Source.Properties = pki.props("PLAIN", "app", "wrong")
	for _, s := range []*sluicev1.JobSpec{spec, bad} {
		if _, err := tc.Client.Submit(ctx, s); err != nil {
			t.Fatalf("submit %s: %v", s.GetName(), err)
		}
	}

	// The wrong password fails its job with the broker's answer.
	deadline := time.Now().Add(30 * time.Second)
	for {
		j, err := tc.Client.Job(ctx, bad.GetName())
		if err != nil {
			t.Fatal(err)
		}
		if j.GetState() == sluicev1.JobState_JOB_STATE_FAILED {
			for _, want := range []string{"SASL_AUTHENTICATION_FAILED", "Invalid username or password", "fix the SASL properties"} {
				if !strings.Contains(j.GetMessage(), want) {
					t.Errorf("failed job's message %q does not contain %q", j.GetMessage(), want)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job with a wrong password: state %v, message %q; want FAILED", j.GetState(), j.GetMessage())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// txn list and txn abort say the same; a retry would not help.
	_, lerr := tc.Client.Transactions(ctx, bad.GetName())
	_, aerr := tc.Client.AbortTransactions(ctx, bad.GetName())
	for what, err := range map[string]error{"txn list": lerr, "txn abort": aerr} {
		if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "SASL_AUTHENTICATION_FAILED") {
			t.Errorf("%s of the job with a wrong password: %v, want FailedPrecondition with SASL_AUTHENTICATION_FAILED", what, err)
		}
	}

	// The good job reads and writes everything, exactly once.
	tc.waitOffsets(spec.GetName(), map[string]int64{in + "/0": n / parts, in + "/1": n / parts}, 60*time.Second)
	seen, values := readSecure(t, pki, tc.Brokers, out, parts)
	checkOutput(t, o, seen, values, false)
	if j, _ := tc.Client.Job(ctx, spec.GetName()); j.GetState() != sluicev1.JobState_JOB_STATE_RUNNING {
		t.Fatalf("the good job: state %v, message %q", j.GetState(), j.GetMessage())
	}

	job, err := tc.Client.Job(ctx, spec.GetName())
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{} // transactional id -> source partition
	for p := range int32(parts) {
		ids[jobspec.TransactionalID(spec, job.GetIncarnation(), in, p)] = fmt.Sprintf("%s/%d", in, p)
	}
	states := func() map[string]string {
		t.Helper()
		txns, err := tc.Client.Transactions(ctx, spec.GetName())
		if err != nil {
			t.Fatalf("txn list: %v", err)
		}
		got := map[string]string{}
		for _, tx := range txns {
			if _, ok := ids[tx.GetTransactionalId()]; !ok {
				t.Errorf("txn list: transactional id %q is not the job's", tx.GetTransactionalId())
			}
			got[tx.GetTransactionalId()] = tx.GetState()
		}
		return got
	}
	if got := states(); len(got) != parts {
		t.Fatalf("txn list: %v, want the job's %d transactional ids", got, parts)
	}

	// An open transaction: txn list shows it, and stopping the job aborts it.
	hold.Store(true)
	o2 := newOrders()
	produceSecure(t, pki, tc.Brokers, o2, in, 1, 10) // partition 0 only
	var heldID string
	select {
	case src := <-held:
		for id, s := range ids {
			if s == src {
				heldID = id
			}
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no transaction reached its commit")
	}
	if got := states()[heldID]; got != "Ongoing" {
		t.Fatalf("txn list while a transaction is open: %s is %q, want Ongoing", heldID, got)
	}
	aborted := watch.on("aborted open transactions of a stopped job")
	if _, err := tc.Client.Stop(ctx, spec.GetName()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-aborted:
	case <-time.After(30 * time.Second):
		t.Fatal("stopping the job did not abort its open transaction")
	}
	if got := states()[heldID]; got == "Ongoing" {
		t.Fatalf("txn list after stop: %s is still Ongoing", heldID)
	}

	// txn abort: a producer that took the job's transactional id and left a
	// transaction open is fenced, its transaction aborted.
	rogue, err := kgo.NewClient(append(pki.kgoOpts(tc.Brokers), kgo.TransactionalID(heldID),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.TransactionTimeout(10*time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Close()
	if err := rogue.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := rogue.ProduceSync(ctx, &kgo.Record{Topic: out, Partition: 0, Value: []byte("rogue")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if got := states()[heldID]; got != "Ongoing" {
		t.Fatalf("txn list with a rogue transaction open: %s is %q, want Ongoing", heldID, got)
	}
	got, err := tc.Client.AbortTransactions(ctx, spec.GetName())
	if err != nil {
		t.Fatalf("txn abort: %v", err)
	}
	if len(got) != 1 || got[0] != heldID {
		t.Fatalf("txn abort aborted %v, want [%s]", got, heldID)
	}
	if got := states()[heldID]; got == "Ongoing" {
		t.Fatalf("txn list after txn abort: %s is still Ongoing", heldID)
	}
	if err := rogue.EndTransaction(ctx, kgo.TryCommit); err == nil {
		t.Errorf("the fenced rogue producer committed")
	}
	// Neither the held transaction nor the rogue one is visible.
	seen, values = readSecure(t, pki, tc.Brokers, out, parts)
	checkOutput(t, o, seen, values, false)
}

// produceSecure writes n orders (see orders.produce) through the SASL_SSL
// listener, round robin over parts partitions.
func produceSecure(t *testing.T, pki *kafkaPKI, brokers string, o *orders, topic string, parts int32, n int) {
	t.Helper()
	cl, err := kgo.NewClient(append(pki.kgoOpts(brokers), kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var batch []*kgo.Record
	for i := range n {
		amount := (i * 37) % 100
		batch = append(batch, &kgo.Record{Topic: topic, Partition: int32(i) % parts,
			Key: fmt.Appendf(nil, "c%d", i%17), Value: fmt.Appendf(nil, `{"n":%d,"amount":%d}`, i, amount)})
	}
	res := cl.ProduceSync(context.Background(), batch...)
	if err := res.FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, r := range res {
		var i, amount int
		fmt.Sscanf(string(r.Record.Value), `{"n":%d,"amount":%d}`, &i, &amount)
		if amount >= 10 {
			o.want[fmt.Sprintf("%s/%d/%d", r.Record.Topic, r.Record.Partition, r.Record.Offset)] = fmt.Sprint(amount * 2)
		}
	}
}

// readSecure is readOutput through the SASL_SSL listener, without waiting
// for quiet: it writes a marker record to each partition of the output
// after the transactions of interest ended, and reads with read_committed
// until it has seen every marker: then every committed record before them
// has been read.
func readSecure(t *testing.T, pki *kafkaPKI, brokers, topic string, parts int32) (map[string]int, map[string]string) {
	t.Helper()
	cl, err := kgo.NewClient(append(pki.kgoOpts(brokers), kgo.ConsumeTopics(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	marker := fmt.Sprintf("end of read %d", time.Now().UnixNano())
	for p := range parts {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: p, Value: []byte(marker)}).FirstErr(); err != nil {
			t.Fatalf("write the end marker: %v", err)
		}
	}
	seen, values := map[string]int{}, map[string]string{}
	for markers := int32(0); markers < parts; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: %v (%d of %d end markers, %d records)", topic, ctx.Err(), markers, parts, len(seen))
		}
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Value) == marker {
				markers++
			}
			for _, h := range r.Headers {
				if h.Key == "sluice-src" {
					seen[string(h.Value)]++
					values[string(h.Value)] = string(r.Value)
				}
			}
		})
	}
	return seen, values
}
