package schema

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/schemaregistry"

	"github.com/sluice-stream/sluice/jobspec"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Bounds of the registry client.
const (
	// DefaultTimeout is the deadline of one request to the registry.
	DefaultTimeout = 10 * time.Second
	// MaxTimeout bounds schema_registry.timeout.
	MaxTimeout = 60 * time.Second
	// MaxResponseBytes bounds one response of the registry (a schema and
	// its metadata): a schema past it is refused, not read whole.
	MaxResponseBytes = 1 << 20
	// CacheSchemas bounds the schemas the client keeps, per kind of lookup.
	CacheSchemas = 1000
)

// ConfigError is an invalid schema_registry setting, named by its field.
type ConfigError struct {
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// CheckConfig says what is wrong with a schema_registry setting, as a
// *ConfigError naming the field under prefix (e.g. "source.schema_registry").
func CheckConfig(prefix string, c *sluicev1.SchemaRegistry) error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: prefix + "." + field, Err: fmt.Errorf(format, args...)}
	}
	if c.GetUrl() == "" {
		return bad("url", "required by the avro, protobuf and jsonschema formats")
	}
	if n := len(c.GetUrl()); n > jobspec.MaxRegistryURLLength {
		return bad("url", "%d bytes, more than %d", n, jobspec.MaxRegistryURLLength)
	}
	u, err := url.Parse(c.GetUrl())
	switch {
	case err != nil:
		return bad("url", "%q is not a URL", c.GetUrl())
	case u.Scheme != "http" && u.Scheme != "https":
		return bad("url", "%q: want an http:// or https:// URL", c.GetUrl())
	case u.Host == "":
		return bad("url", "%q has no host", c.GetUrl())
	case u.User != nil:
		return bad("url", "put credentials in username and password (they are redacted), not in the URL")
	case u.RawQuery != "" || u.Fragment != "":
		return bad("url", "%q: a registry URL has no query or fragment", c.GetUrl())
	}
	for _, f := range []struct{ name, v string }{
		{"username", c.GetUsername()}, {"password", c.GetPassword()}, {"bearer_token", c.GetBearerToken()},
	} {
		if len(f.v) > jobspec.MaxCredentialLength {
			return bad(f.name, "%d bytes, more than %d", len(f.v), jobspec.MaxCredentialLength)
		}
	}
	switch {
	case (c.GetUsername() == "") != (c.GetPassword() == ""):
		return bad("username", "set both username and password, or neither")
	case c.GetUsername() != "" && c.GetBearerToken() != "":
		return bad("bearer_token", "set basic authentication (username, password) or a bearer token, not both")
	}
	if n := len(c.GetCaPem()); n > jobspec.MaxRegistryCAPEMBytes {
		return bad("ca_pem", "%d bytes, more than %d", n, jobspec.MaxRegistryCAPEMBytes)
	}
	if c.GetCaPem() != "" && !x509.NewCertPool().AppendCertsFromPEM([]byte(c.GetCaPem())) {
		return bad("ca_pem", "no PEM certificate in it")
	}
	if t := c.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() <= 0 || t.AsDuration() > MaxTimeout {
			return bad("timeout", "%v: want more than 0 and at most %v", t.AsDuration(), MaxTimeout)
		}
	}
	return nil
}

// NewClient returns a registry client for c: requests time out, responses
// are bounded by MaxResponseBytes, schemas are cached (CacheSchemas), and
// failures are not retried here (the task is, with backoff).
func NewClient(c *sluicev1.SchemaRegistry) (schemaregistry.Client, error) {
	if err := CheckConfig("source.schema_registry", c); err != nil {
		return nil, err
	}
	timeout := DefaultTimeout
	if t := c.GetTimeout(); t != nil {
		timeout = t.AsDuration()
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if pem := c.GetCaPem(); pem != "" {
		tlsConf.RootCAs = x509.NewCertPool()
		tlsConf.RootCAs.AppendCertsFromPEM([]byte(pem))
	}
	rt := &transport{
		base: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: timeout}).DialContext,
			TLSClientConfig:       tlsConf,
			TLSHandshakeTimeout:   timeout,
			ResponseHeaderTimeout: timeout,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       90 * time.Second,
		},
	}
	switch {
	case c.GetUsername() != "":
		rt.auth = "Basic " + base64.StdEncoding.EncodeToString([]byte(c.GetUsername()+":"+c.GetPassword()))
	case c.GetBearerToken() != "":
		rt.auth = "Bearer " + c.GetBearerToken()
	}
	conf := schemaregistry.NewConfig(c.GetUrl())
	conf.HTTPClient = &http.Client{Transport: rt, Timeout: timeout}
	conf.CacheCapacity = CacheSchemas
	conf.MaxRetries = 0
	return schemaregistry.NewClient(conf)
}

// transport adds the credentials to every request, turns a response that is
// not a success into a *StatusError (the client would otherwise try to read
// an error page as JSON), and bounds the body of the others.
type transport struct {
	base *http.Transport
	auth string
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.auth != "" {
		req = req.Clone(req.Context())
		req.Header.Set("Authorization", t.auth)
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, &StatusError{Code: resp.StatusCode, Body: string(msg)}
	}
	resp.Body = &limitedBody{rc: resp.Body, left: MaxResponseBytes}
	return resp, nil
}

// StatusError is a registry response other than a success.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("schema registry answered %d %s", e.Code, http.StatusText(e.Code))
}

// ErrTooLarge is a registry response above MaxResponseBytes.
var ErrTooLarge = fmt.Errorf("schema registry response exceeds %d bytes", MaxResponseBytes)

type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte more tells a body of exactly the limit from a longer one.
		var one [1]byte
		if n, _ := b.rc.Read(one[:]); n > 0 {
			return 0, ErrTooLarge
		}
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// unavailable reports whether err means the registry could not answer (not
// reachable, too slow, a server error): the task is retried, the record is
// not at fault.
func unavailable(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code != http.StatusNotFound
	}
	if errors.Is(err, ErrTooLarge) {
		return false
	}
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne)
}
