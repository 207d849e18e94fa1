package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/sluice-stream/sluice/coordinator"
	"github.com/sluice-stream/sluice/dev"
	"github.com/sluice-stream/sluice/kafkasrc"
)

// kafkaPolicyFlags registers the coordinator's Kafka policy flags on fs,
// filling p as they are parsed.
func kafkaPolicyFlags(fs *pflag.FlagSet, p *kafkasrc.Policy) {
	fs.Func("kafka-file-dir", "`directory` that jobs' file properties (ssl.ca.location, ssl.key.location, ...) must point into; unset, file properties are refused", func(v string) error {
		dir, err := filepath.Abs(v)
		if err != nil {
			return err
		}
		st, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if !st.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		p.FileDir = dir
		return nil
	})
	fs.Func("allow-kafka-property", "allow jobs to set this Kafka `property` although it loads code, runs a command, calls a URL or is not on the allow-list (e.g. plugin.library.paths); repeatable", func(v string) error {
		name := strings.TrimSpace(v)
		if name == "" {
			return errors.New("empty property name")
		}
		p.Allow = append(p.Allow, name)
		return nil
	})
	fs.Func("allowed-schema-registry", "comma-separated `urls` (scheme://host:port) that are the only Schema Registries jobs may name in source.schema_registry.url; repeatable; unset, any", func(v string) error {
		for _, a := range strings.Split(v, ",") {
			if _, err := kafkasrc.RegistryOrigin(a); err != nil {
				return err
			}
			p.SchemaRegistries = append(p.SchemaRegistries, strings.TrimSpace(a))
		}
		return nil
	})
	fs.Func("allowed-bootstrap", "comma-separated `brokers` (host:port) that are the only Kafka brokers jobs may name in bootstrap_servers (source and sink); repeatable; unset, any", func(v string) error {
		for _, a := range strings.Split(v, ",") {
			a = strings.TrimSpace(a)
			if _, _, err := net.SplitHostPort(a); err != nil || a == "" {
				return fmt.Errorf("%q: want host:port", a)
			}
			p.Bootstrap = append(p.Bootstrap, a)
		}
		return nil
	})
}

// devKafkaPolicyFlags registers the Kafka policy flags of `sluice dev`,
// whose coordinator applies them.
func devKafkaPolicyFlags(fs *pflag.FlagSet, cfg *dev.Config) {
	p := &kafkasrc.Policy{}
	kafkaPolicyFlags(fs, p)
	tweak := cfg.Coordinator
	cfg.Coordinator = func(c *coordinator.Config) {
		c.KafkaPolicy = *p
		if tweak != nil {
			tweak(c)
		}
	}
}
