package coordinator

import (
	"google.golang.org/protobuf/proto"

	"github.com/sluice-stream/sluice/kafkasrc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Credentials in a job's Kafka properties (kafkasrc.IsSecret: sasl.password,
// ssl.key.password, ...) are stored in etcd and sent to the workers in tasks,
// but every JobService response shows them as kafkasrc.Redacted. An update
// that sends a credential back as Redacted keeps the stored value, so that a
// spec read with GetJob, edited and submitted again keeps its credentials.

// redacted returns a copy of job whose credential properties are
// kafkasrc.Redacted; job itself is left as it is.
func redacted(job *sluicev1.Job) *sluicev1.Job {
	if job == nil || !hasSecrets(job.GetSpec()) && !hasRegistrySecrets(job.GetSpec()) {
		return job
	}
	out := proto.Clone(job).(*sluicev1.Job)
	redactRegistry(out.GetSpec())
	for _, props := range propertyMaps(out.GetSpec()) {
		for k := range props {
			if kafkasrc.IsSecret(k) {
				props[k] = kafkasrc.Redacted
			}
		}
	}
	return out
}

func hasSecrets(spec *sluicev1.JobSpec) bool {
	for _, props := range propertyMaps(spec) {
		for k := range props {
			if kafkasrc.IsSecret(k) {
				return true
			}
		}
	}
	return false
}

// propertyMaps returns the spec's Kafka property maps, by field name.
func propertyMaps(spec *sluicev1.JobSpec) map[string]map[string]string {
	return map[string]map[string]string{
		"source.properties":     spec.GetSource().GetProperties(),
		"sink.kafka.properties": spec.GetSink().GetKafka().GetProperties(),
	}
}

// keepSecrets replaces, in spec, every credential property whose value is
// kafkasrc.Redacted by the value stored in old (the job's current spec; nil
// for a new job). A Redacted credential with no stored value is refused:
// the real value must be sent.
func keepSecrets(spec, old *sluicev1.JobSpec) error {
	if err := keepRegistrySecrets(spec, old); err != nil {
		return err
	}
	stored := propertyMaps(old)
	for field, props := range propertyMaps(spec) {
		for k, v := range props {
			if v != kafkasrc.Redacted || !kafkasrc.IsSecret(k) {
				continue
			}
			prev, ok := stored[field][k]
			if !ok {
				return invalid(field, "property %q is %s but the job has no stored value for it: send the value", k, kafkasrc.Redacted)
			}
			props[k] = prev
		}
	}
	return nil
}
