package coordinator

import (
	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// registrySecrets returns pointers to the credentials of the spec's Schema
// Registry (password, bearer token), by field name; none without one.
func registrySecrets(spec *sluicev1.JobSpec) map[string]*string {
	reg := spec.GetSource().GetSchemaRegistry()
	if reg == nil {
		return nil
	}
	return map[string]*string{
		"source.schema_registry.password":     &reg.Password,
		"source.schema_registry.bearer_token": &reg.BearerToken,
	}
}

func hasRegistrySecrets(spec *sluicev1.JobSpec) bool {
	for _, p := range registrySecrets(spec) {
		if *p != "" {
			return true
		}
	}
	return false
}

// redactRegistry replaces the registry's credentials in spec by Redacted.
func redactRegistry(spec *sluicev1.JobSpec) {
	for _, p := range registrySecrets(spec) {
		if *p != "" {
			*p = kafkasrc.Redacted
		}
	}
}

// keepRegistrySecrets replaces a Redacted registry credential in spec by the
// one stored in old, like keepSecrets does for properties.
func keepRegistrySecrets(spec, old *sluicev1.JobSpec) error {
	stored := registrySecrets(old)
	for field, p := range registrySecrets(spec) {
		if *p != kafkasrc.Redacted {
			continue
		}
		prev, ok := stored[field]
		if !ok || *prev == "" {
			return invalid(field, "is %s but the job has no stored value for it: send the value", kafkasrc.Redacted)
		}
		*p = *prev
	}
	return nil
}
