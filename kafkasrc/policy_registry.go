package kafkasrc

import (
	"fmt"
	"net/url"
	"strings"
)

// CheckSchemaRegistry refuses a registry URL whose scheme, host and port are
// not those of one of p.SchemaRegistries; an empty list allows any.
func (p Policy) CheckSchemaRegistry(raw string) error {
	if len(p.SchemaRegistries) == 0 {
		return nil
	}
	origin, err := RegistryOrigin(raw)
	if err != nil {
		return err
	}
	for _, a := range p.SchemaRegistries {
		if o, err := RegistryOrigin(a); err == nil && o == origin {
			return nil
		}
	}
	return fmt.Errorf("%s is not one of the allowed schema registries (%s): %w", origin, strings.Join(p.SchemaRegistries, ","), ErrRefusedProperty)
}

// RegistryOrigin is a registry URL's scheme://host:port, lowercased, with
// the scheme's default port made explicit.
func RegistryOrigin(raw string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return "", fmt.Errorf("%q: want an http:// or https:// URL", raw)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return strings.ToLower(u.Scheme + "://" + u.Hostname() + ":" + port), nil
}
