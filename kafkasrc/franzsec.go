package kafkasrc

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// The coordinator's franz-go clients (the planner's, and txn list's) must
// connect to a job's cluster the way its librdkafka clients do, with the
// job's security properties. franzOptions translates the librdkafka
// security properties a franz-go client can honour; anything else about
// security is refused, naming the property, rather than connecting with
// less security than the job asked for.

// ErrUnsupportedProperty means that a librdkafka property cannot be
// translated to a franz-go client option (a SASL mechanism such as GSSAPI or
// OAUTHBEARER, a PKCS#12 keystore, OpenSSL cipher lists...).
var ErrUnsupportedProperty = errors.New("kafkasrc: property not supported by the franz-go clients")

// franzSecurityProperties are the security properties franzOptions
// understands, spelled as librdkafka spells them.
var franzSecurityProperties = map[string]bool{
	"security.protocol":                     true,
	"sasl.mechanism":                        true,
	"sasl.mechanisms":                       true,
	"sasl.username":                         true,
	"sasl.password":                         true,
	"ssl.ca.location":                       true,
	"ssl.ca.pem":                            true,
	"ssl.certificate.location":              true,
	"ssl.certificate.pem":                   true,
	"ssl.key.location":                      true,
	"ssl.key.pem":                           true,
	"ssl.key.password":                      true,
	"enable.ssl.certificate.verification":   true,
	"ssl.endpoint.identification.algorithm": true,
}

// securityProperty reports whether a property is about TLS or SASL.
func securityProperty(name string) (tlsProp, saslProp bool) {
	n := strings.ToLower(strings.TrimSpace(name))
	switch {
	case strings.HasPrefix(n, "ssl.") || strings.HasPrefix(n, "enable.ssl"):
		return true, false
	case strings.HasPrefix(n, "sasl.") || strings.HasPrefix(n, "enable.sasl"):
		return false, true
	}
	return false, false
}

// connectionPrefixes start the names of the librdkafka properties that
// change how a client connects: security, sockets, broker addresses.
var connectionPrefixes = []string{"security.", "sasl.", "ssl.", "socket.", "broker.", "client.dns", "enable.sasl", "enable.ssl", "api.version", "https.", "resolve.", "connections."}

// connectionProperty reports whether a librdkafka property changes how a
// client connects (see connectionPrefixes).
func connectionProperty(name string) bool {
	n := strings.ToLower(strings.TrimSpace(name))
	for _, prefix := range connectionPrefixes {
		if strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}

// ConnectionProperties returns the properties of props that change how a
// client connects (security, sockets, broker addresses): those that every
// client of a cluster needs, whatever its kind. The Kafka sink's producer
// properties hold them beside producer-only ones (acks, compression...).
func ConnectionProperties(props map[string]string) map[string]string {
	var out map[string]string
	for k, v := range props {
		if connectionProperty(k) {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}

// franzOptions returns the franz-go options that connect a client with the
// security a librdkafka client gets from props: TLS for SSL and SASL_SSL,
// SASL PLAIN or SCRAM for SASL_PLAINTEXT and SASL_SSL. Properties unrelated
// to security are ignored; TLS properties are ignored without TLS and SASL
// ones without SASL, as librdkafka ignores them. An error names the
// property; it wraps ErrUnsupportedProperty when librdkafka would accept
// the property but a franz-go client cannot honour it.
func franzOptions(props map[string]string) ([]kgo.Opt, error) {
	protocol := "PLAINTEXT"
	if v, ok := props["security.protocol"]; ok {
		protocol = strings.ToUpper(strings.TrimSpace(v))
	}
	var useTLS, useSASL bool
	switch protocol {
	case "PLAINTEXT":
	case "SSL":
		useTLS = true
	case "SASL_PLAINTEXT":
		useSASL = true
	case "SASL_SSL":
		useTLS, useSASL = true, true
	default:
		return nil, fmt.Errorf("property %q: %q is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL", "security.protocol", props["security.protocol"])
	}
	names := make([]string, 0, len(props))
	for k := range props {
		names = append(names, k)
	}
	sort.Strings(names) // report the same property every time
	for _, k := range names {
		if franzSecurityProperties[k] {
			continue
		}
		tlsProp, saslProp := securityProperty(k)
		n := strings.ToLower(strings.TrimSpace(k))
		if (tlsProp && useTLS) || (saslProp && useSASL) || strings.HasPrefix(n, "security.") {
			return nil, fmt.Errorf("property %q: %w", k, ErrUnsupportedProperty)
		}
	}
	var opts []kgo.Opt
	if useTLS {
		cfg, err := tlsConfig(props)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	if useSASL {
		m, err := saslMechanism(props)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

// saslMechanism returns the SASL mechanism of props with its credentials.
func saslMechanism(props map[string]string) (sasl.Mechanism, error) {
	name, prop := "GSSAPI", "sasl.mechanism" // librdkafka's default
	m1, ok1 := props["sasl.mechanism"]
	m2, ok2 := props["sasl.mechanisms"]
	switch {
	case ok1 && ok2 && !strings.EqualFold(strings.TrimSpace(m1), strings.TrimSpace(m2)):
		return nil, fmt.Errorf("properties %q and %q: %q and %q disagree (they are one property: set one)", "sasl.mechanism", "sasl.mechanisms", m1, m2)
	case ok1:
		name = m1
	case ok2:
		name, prop = m2, "sasl.mechanisms"
	}
	user, pass := props["sasl.username"], props["sasl.password"]
	var m sasl.Mechanism
	switch strings.ToUpper(strings.TrimSpace(name)) {
	case "PLAIN":
		m = plain.Auth{User: user, Pass: pass}.AsMechanism()
	case "SCRAM-SHA-256":
		m = scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
	case "SCRAM-SHA-512":
		m = scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
	default:
		what := fmt.Sprintf("%q", name)
		if !ok1 && !ok2 {
			what = "GSSAPI (librdkafka's default when it is not set)"
		}
		return nil, fmt.Errorf("property %q: SASL mechanism %s: only PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 are supported: %w", prop, what, ErrUnsupportedProperty)
	}
	if user == "" {
		return nil, fmt.Errorf("property %q: required by SASL mechanism %s", "sasl.username", strings.ToUpper(strings.TrimSpace(name)))
	}
	return m, nil
}

// tlsConfig returns the TLS configuration of props' ssl.* properties. The
// client sets each broker's host name as the ServerName to verify.
func tlsConfig(props map[string]string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	roots, err := caPool(props)
	if err != nil {
		return nil, err
	}
	cfg.RootCAs = roots // nil: the system's roots
	if cert, ok, err := clientCertificate(props); err != nil {
		return nil, err
	} else if ok {
		cfg.Certificates = []tls.Certificate{cert}
	}
	verify, err := boolProperty(props, "enable.ssl.certificate.verification", true)
	if err != nil {
		return nil, err
	}
	hostname := true
	if v, ok := props["ssl.endpoint.identification.algorithm"]; ok {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "https":
		case "none":
			hostname = false
		default:
			return nil, fmt.Errorf("property %q: %q is not one of https, none", "ssl.endpoint.identification.algorithm", v)
		}
	}
	switch {
	case !verify:
		cfg.InsecureSkipVerify = true
	case !hostname:
		// Verify the chain, not the name: Go verifies both or neither.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the broker sent no certificate")
			}
			opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		}
	}
	return cfg, nil
}

// boolProperty reads a librdkafka boolean property.
func boolProperty(props map[string]string, name string, def bool) (bool, error) {
	v, ok := props[name]
	if !ok {
		return def, nil
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, fmt.Errorf("property %q: %q is not true or false", name, v)
}

// caPool returns the CA certificates of ssl.ca.location (a PEM file, or a
// directory of them) and ssl.ca.pem, or nil for the system's roots.
func caPool(props map[string]string) (*x509.CertPool, error) {
	loc, hasLoc := props["ssl.ca.location"]
	inline, hasPEM := props["ssl.ca.pem"]
	if (!hasLoc || strings.EqualFold(strings.TrimSpace(loc), "probe")) && !hasPEM {
		return nil, nil
	}
	pool := x509.NewCertPool()
	if hasPEM && !pool.AppendCertsFromPEM([]byte(inline)) {
		return nil, fmt.Errorf("property %q: no PEM certificate in it", "ssl.ca.pem")
	}
	if !hasLoc || strings.EqualFold(strings.TrimSpace(loc), "probe") {
		return pool, nil
	}
	files := []string{loc}
	if st, err := os.Stat(loc); err != nil {
		return nil, fmt.Errorf("property %q: %w", "ssl.ca.location", err)
	} else if st.IsDir() {
		entries, err := os.ReadDir(loc)
		if err != nil {
			return nil, fmt.Errorf("property %q: %w", "ssl.ca.location", err)
		}
		files = files[:0]
		for _, e := range entries {
			if e.Type().IsRegular() {
				files = append(files, filepath.Join(loc, e.Name()))
			}
		}
	}
	found := false
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("property %q: %w", "ssl.ca.location", err)
		}
		found = pool.AppendCertsFromPEM(b) || found
	}
	if !found {
		return nil, fmt.Errorf("property %q: no PEM certificate in %s", "ssl.ca.location", loc)
	}
	return pool, nil
}

// clientCertificate returns the client certificate and key of props, if
// any: from files (ssl.certificate.location, ssl.key.location) or inline
// (ssl.certificate.pem, ssl.key.pem), the key decrypted with
// ssl.key.password when it is encrypted.
func clientCertificate(props map[string]string) (tls.Certificate, bool, error) {
	certPEM, certProp, err := pemProperty(props, "ssl.certificate.location", "ssl.certificate.pem")
	if err != nil {
		return tls.Certificate{}, false, err
	}
	keyPEM, keyProp, err := pemProperty(props, "ssl.key.location", "ssl.key.pem")
	if err != nil {
		return tls.Certificate{}, false, err
	}
	switch {
	case certProp == "" && keyProp == "":
		return tls.Certificate{}, false, nil
	case certProp == "":
		return tls.Certificate{}, false, fmt.Errorf("property %q: set without ssl.certificate.location (or ssl.certificate.pem)", keyProp)
	case keyProp == "":
		return tls.Certificate{}, false, fmt.Errorf("property %q: set without ssl.key.location (or ssl.key.pem)", certProp)
	}
	if keyPEM, err = decryptKey(keyPEM, keyProp, props["ssl.key.password"]); err != nil {
		return tls.Certificate{}, false, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, false, fmt.Errorf("properties %q and %q: %w", certProp, keyProp, err)
	}
	return cert, true, nil
}

// pemProperty returns the PEM of a file property or of its inline
// counterpart, and the name of the property it came from ("" if neither is
// set).
func pemProperty(props map[string]string, fileProp, inlineProp string) ([]byte, string, error) {
	if v, ok := props[inlineProp]; ok {
		return []byte(v), inlineProp, nil
	}
	loc, ok := props[fileProp]
	if !ok {
		return nil, "", nil
	}
	b, err := os.ReadFile(loc)
	if err != nil {
		return nil, "", fmt.Errorf("property %q: %w", fileProp, err)
	}
	return b, fileProp, nil
}

// decryptKey returns keyPEM with its private key decrypted by password
// when it is encrypted with the legacy PEM encryption (Proc-Type:
// 4,ENCRYPTED, as "openssl rsa -aes256" writes). An encrypted PKCS#8 key
// (BEGIN ENCRYPTED PRIVATE KEY) is not supported.
func decryptKey(keyPEM []byte, keyProp, password string) ([]byte, error) {
	var out []byte
	rest := keyPEM
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch {
		case block.Type == "ENCRYPTED PRIVATE KEY":
			return nil, fmt.Errorf("property %q: an encrypted PKCS#8 key: %w (decrypt it, or encrypt it with the legacy PEM encryption)", keyProp, ErrUnsupportedProperty)
		//nolint:staticcheck // legacy PEM encryption is what librdkafka users have
		case x509.IsEncryptedPEMBlock(block):
			if password == "" {
				return nil, fmt.Errorf("property %q: the key is encrypted: set ssl.key.password", keyProp)
			}
			//nolint:staticcheck // see above
			der, err := x509.DecryptPEMBlock(block, []byte(password))
			if err != nil {
				return nil, fmt.Errorf("property %q: decrypt the key with ssl.key.password: %w", keyProp, err)
			}
			block = &pem.Block{Type: block.Type, Bytes: der}
		}
		out = append(out, pem.EncodeToMemory(block)...)
	}
	if out == nil {
		return keyPEM, nil // let tls.X509KeyPair say what is wrong
	}
	return out, nil
}

// franzClient returns a franz-go client of c with c's security properties.
func franzClient(c Cluster, opts ...kgo.Opt) (*kgo.Client, error) {
	sec, err := franzOptions(c.Properties)
	if err != nil {
		return nil, err
	}
	clientID := "sluice"
	if v := strings.TrimSpace(c.Properties["client.id"]); v != "" {
		clientID = v
	}
	all := append([]kgo.Opt{kgo.SeedBrokers(strings.Split(c.Bootstrap, ",")...), kgo.ClientID(clientID)}, sec...)
	cl, err := kgo.NewClient(append(all, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("franz-go client for %s: %w", c.Bootstrap, err)
	}
	return cl, nil
}

// franzPermanent wraps with ErrPermanent the franz-go errors that retrying
// would repeat: failed authentication or authorization.
func franzPermanent(err error) error {
	var hint string
	switch {
	case err == nil || errors.Is(err, ErrPermanent):
		return err
	case errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.UnsupportedSaslMechanism), errors.Is(err, kerr.IllegalSaslState):
		hint = "fix the SASL properties: sasl.mechanism, sasl.username, sasl.password"
	case errors.Is(err, kerr.TopicAuthorizationFailed):
		hint = "grant the principal access to the topic"
	case errors.Is(err, kerr.ClusterAuthorizationFailed):
		hint = "grant the principal access to the cluster"
	case errors.Is(err, kerr.TransactionalIDAuthorizationFailed):
		hint = "grant the principal access to the transactional id"
	default:
		return err
	}
	return fmt.Errorf("%w (%s): %w", err, hint, ErrPermanent)
}
