package kafkasrc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// ErrRefusedProperty means that a job's client property, or its bootstrap
// servers, are not allowed by the operator's Policy.
var ErrRefusedProperty = errors.New("kafkasrc: refused by the kafka policy")

// Redacted replaces the value of a credential property in what Sluice shows
// (API responses, CLI output, logs).
const Redacted = "[redacted]"

// Policy is what an operator lets jobs put into the Kafka clients Sluice
// makes for them. Properties are allow-listed: librdkafka can load code,
// run commands, read files and call URLs on the coordinator's and the
// workers' hosts through its configuration, and a job spec is user input.
// The zero Policy allows the harmless properties only, no files, and any
// bootstrap servers.
type Policy struct {
	// FileDir is the directory that file properties (ssl.ca.location,
	// ssl.key.location, ...) must point into; "" refuses file properties.
	FileDir string
	// Allow lists properties that load code, run a command or call a URL
	// (plugin.library.paths, sasl.kerberos.kinit.cmd, ...) which the
	// operator accepts anyway.
	Allow []string
	// Bootstrap lists the host:port addresses jobs may name in their
	// bootstrap servers; empty allows any.
	Bootstrap []string
	// SchemaRegistries lists the Schema Registries (scheme://host:port)
	// jobs may name in source.schema_registry.url; empty allows any.
	SchemaRegistries []string
}

// propertyKind says how the policy treats a property.
type propertyKind int

const (
	harmless  propertyKind = iota // any value
	capped                        // an integer up to a maximum
	file                          // a path under Policy.FileDir
	dangerous                     // loads code, runs a command or calls a URL
)

type propertyRule struct {
	kind propertyKind
	max  int64  // capped: the largest value allowed
	why  string // dangerous: what it does
}

// Caps of the size properties: far above any sensible tuning, and below
// what would let one job's clients take a host's memory.
const (
	maxFetchBytes   = 256 << 20
	maxQueueKBytes  = 1 << 20 // 1 GiB
	maxQueueRecords = 10_000_000
	maxMessageBytes = 256 << 20
	maxSocketBuffer = 100_000_000 // librdkafka's own maximum
	maxLingerMs     = 10_000
)

// propertyRules is the allow-list of librdkafka properties, for consumers
// and producers alike. Properties that Sluice sets itself are refused
// separately (ValidateProperties and the sink's own check) with a message
// saying so.
var propertyRules = map[string]propertyRule{
	// Identity and security.
	"client.id":                             {},
	"client.rack":                           {},
	"security.protocol":                     {},
	"sasl.mechanism":                        {},
	"sasl.mechanisms":                       {},
	"sasl.username":                         {},
	"sasl.password":                         {},
	"sasl.kerberos.service.name":            {},
	"sasl.kerberos.principal":               {},
	"sasl.kerberos.min.time.before.relogin": {},
	"sasl.kerberos.keytab":                  {kind: file},
	"sasl.kerberos.kinit.cmd":               {kind: dangerous, why: "runs a shell command"},
	"sasl.oauthbearer.config":               {},
	"enable.sasl.oauthbearer.unsecure.jwt":  {},
	"sasl.oauthbearer.method":               {},
	"sasl.oauthbearer.client.id":            {},
	"sasl.oauthbearer.client.secret":        {},
	"sasl.oauthbearer.scope":                {},
	"sasl.oauthbearer.extensions":           {},
	"sasl.oauthbearer.token.endpoint.url":   {kind: dangerous, why: "makes the clients call a URL"},
	"ssl.ca.location":                       {kind: file},
	"ssl.certificate.location":              {kind: file},
	"ssl.key.location":                      {kind: file},
	"ssl.crl.location":                      {kind: file},
	"ssl.keystore.location":                 {kind: file},
	"https.ca.location":                     {kind: file},
	"ssl.ca.pem":                            {},
	"ssl.certificate.pem":                   {},
	"ssl.key.pem":                           {},
	"ssl.key.password":                      {},
	"ssl.keystore.password":                 {},
	"ssl.cipher.suites":                     {},
	"ssl.curves.list":                       {},
	"ssl.sigalgs.list":                      {},
	"ssl.endpoint.identification.algorithm": {},
	"enable.ssl.certificate.verification":   {},
	"ssl.engine.location":                   {kind: dangerous, why: "loads an OpenSSL engine (code)"},
	"ssl.engine.id":                         {kind: dangerous, why: "selects an OpenSSL engine (code)"},
	"ssl.providers":                         {kind: dangerous, why: "loads OpenSSL providers (code)"},
	"plugin.library.paths":                  {kind: dangerous, why: "loads shared libraries (code)"},

	// Connections, retries and timeouts.
	"broker.address.family":                   {},
	"client.dns.lookup":                       {},
	"socket.timeout.ms":                       {},
	"socket.keepalive.enable":                 {},
	"socket.nagle.disable":                    {},
	"socket.max.fails":                        {},
	"socket.connection.setup.timeout.ms":      {},
	"socket.send.buffer.bytes":                {kind: capped, max: maxSocketBuffer},
	"socket.receive.buffer.bytes":             {kind: capped, max: maxSocketBuffer},
	"connections.max.idle.ms":                 {},
	"reconnect.backoff.ms":                    {},
	"reconnect.backoff.max.ms":                {},
	"retry.backoff.ms":                        {},
	"retry.backoff.max.ms":                    {},
	"request.timeout.ms":                      {},
	"metadata.max.age.ms":                     {},
	"topic.metadata.refresh.interval.ms":      {},
	"topic.metadata.refresh.fast.interval.ms": {},
	"topic.metadata.propagation.max.ms":       {},
	"api.version.request":                     {},
	"api.version.request.timeout.ms":          {},
	"api.version.fallback.ms":                 {},
	"broker.version.fallback":                 {},
	"allow.auto.create.topics":                {},
	"log.connection.close":                    {},
	"enable.metrics.push":                     {},
	"isolation.level":                         {},

	// Fetching (consumers). Workers lower these further to their share of
	// consumer memory.
	"fetch.wait.max.ms":          {},
	"fetch.min.bytes":            {kind: capped, max: maxFetchBytes},
	"fetch.max.bytes":            {kind: capped, max: maxFetchBytes},
	"max.partition.fetch.bytes":  {kind: capped, max: maxFetchBytes},
	"fetch.message.max.bytes":    {kind: capped, max: maxFetchBytes},
	"receive.message.max.bytes":  {kind: capped, max: 2 * maxFetchBytes},
	"queued.min.messages":        {kind: capped, max: maxQueueRecords},
	"queued.max.messages.kbytes": {kind: capped, max: maxQueueKBytes},
	"fetch.error.backoff.ms":     {},
	"fetch.queue.backoff.ms":     {},
	"check.crcs":                 {},

	// Producing (the Kafka sink).
	"acks":                                  {},
	"request.required.acks":                 {},
	"compression.type":                      {},
	"compression.codec":                     {},
	"compression.level":                     {},
	"message.max.bytes":                     {kind: capped, max: maxMessageBytes},
	"batch.size":                            {kind: capped, max: maxMessageBytes},
	"batch.num.messages":                    {kind: capped, max: 1_000_000},
	"linger.ms":                             {kind: capped, max: maxLingerMs},
	"queue.buffering.max.ms":                {kind: capped, max: maxLingerMs},
	"queue.buffering.max.messages":          {kind: capped, max: maxQueueRecords},
	"queue.buffering.max.kbytes":            {kind: capped, max: maxQueueKBytes},
	"message.timeout.ms":                    {},
	"delivery.timeout.ms":                   {},
	"message.send.max.retries":              {},
	"retries":                               {},
	"max.in.flight.requests.per.connection": {},
	"max.in.flight":                         {},
	"sticky.partitioning.linger.ms":         {kind: capped, max: maxLingerMs},
	"transaction.timeout.ms":                {},
}

// CheckProperties refuses, naming the property and wrapping
// ErrRefusedProperty: a property not on the allow-list (a typo is an error);
// one that loads code, runs a command or calls a URL, unless p.Allow names
// it; a file property outside p.FileDir; a size above its cap. Properties
// are checked in name order, so the same one is reported every time.
func (p Policy) CheckProperties(props map[string]string) error {
	names := make([]string, 0, len(props))
	for k := range props {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := p.checkProperty(name, props[name]); err != nil {
			return err
		}
	}
	return nil
}

func (p Policy) checkProperty(name, value string) error {
	if slices.Contains(p.Allow, name) {
		return nil
	}
	rule, ok := propertyRules[name]
	if !ok {
		return fmt.Errorf("property %q is not a Kafka client property Sluice allows (see the README's Kafka properties): %w", name, ErrRefusedProperty)
	}
	switch rule.kind {
	case dangerous:
		return fmt.Errorf("property %q %s; an operator may allow it with --allow-kafka-property %s: %w", name, rule.why, name, ErrRefusedProperty)
	case capped:
		n, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
		if err != nil {
			return fmt.Errorf("property %q: %q is not an integer: %w", name, value, ErrRefusedProperty)
		}
		if n > rule.max {
			return fmt.Errorf("property %q: %d is above the maximum %d: %w", name, n, rule.max, ErrRefusedProperty)
		}
	case file:
		if name == "ssl.ca.location" && value == "probe" {
			return nil // librdkafka looks in the system's usual CA paths
		}
		if err := p.checkFile(value); err != nil {
			return fmt.Errorf("property %q: %w: %w", name, err, ErrRefusedProperty)
		}
	}
	return nil
}

// checkFile accepts an absolute path that lies under p.FileDir once
// cleaned and with its symbolic links resolved. The file must exist: the
// coordinator's own clients read it too.
func (p Policy) checkFile(path string) error {
	if p.FileDir == "" {
		return errors.New("file properties are refused: the operator set no --kafka-file-dir")
	}
	dir, err := filepath.EvalSymlinks(p.FileDir)
	if err != nil {
		return fmt.Errorf("--kafka-file-dir: %w", err)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return fmt.Errorf("--kafka-file-dir: %w", err)
	}
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%q is not an absolute path under %s", path, p.FileDir)
	}
	clean := filepath.Clean(path)
	if !within(dir, clean) && !within(filepath.Clean(p.FileDir), clean) {
		return fmt.Errorf("%q is outside %s", path, p.FileDir)
	}
	real, err := filepath.EvalSymlinks(clean)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%q does not exist", path)
	}
	if err != nil {
		return fmt.Errorf("%q: %w", path, err)
	}
	if !within(dir, real) {
		return fmt.Errorf("%q leads outside %s (to %s)", path, p.FileDir, real)
	}
	return nil
}

// within reports whether path is dir or inside it; both are clean and
// absolute.
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// CheckBootstrap refuses bootstrap servers (a comma-separated host:port
// list) naming an address that p.Bootstrap does not list; an empty
// p.Bootstrap allows any.
func (p Policy) CheckBootstrap(servers string) error {
	if len(p.Bootstrap) == 0 {
		return nil
	}
	for _, s := range strings.Split(servers, ",") {
		addr := strings.TrimSpace(s)
		if !slices.ContainsFunc(p.Bootstrap, func(a string) bool { return strings.EqualFold(strings.TrimSpace(a), addr) }) {
			return fmt.Errorf("%q is not one of the allowed bootstrap servers (%s): %w", addr, strings.Join(p.Bootstrap, ","), ErrRefusedProperty)
		}
	}
	return nil
}

// CheckCluster checks a cluster's bootstrap servers and properties.
func (p Policy) CheckCluster(c Cluster) error {
	if err := p.CheckBootstrap(c.Bootstrap); err != nil {
		return fmt.Errorf("bootstrap servers: %w", err)
	}
	return p.CheckProperties(c.Properties)
}

// secretWords mark credential properties by name: sasl.password,
// ssl.key.password, ssl.keystore.password, sasl.oauthbearer.client.secret,
// and whatever else a name says is a credential.
var secretWords = []string{"password", "passphrase", "secret", "token", "credential", "key.pem", "private.key"}

// IsSecret reports whether a property holds a credential: its value is
// stored for the workers but shown as Redacted.
func IsSecret(name string) bool {
	n := strings.ToLower(name)
	for _, w := range secretWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// WithCheck makes an AdminPool refuse a cluster that check refuses, before
// any client is made for it.
func WithCheck(check func(Cluster) error) Option { return func(o *options) { o.check = check } }
