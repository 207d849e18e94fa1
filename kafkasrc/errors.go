package kafkasrc

import (
	"errors"
	"fmt"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// ErrPermanent marks an error that retrying the same work would repeat: a
// record too large for the topic, a sink topic or partition that does not
// exist, producer properties that librdkafka refuses or that conflict, an
// authorization failure. A task failing with it should fail its job with the
// message instead of being retried. Fencing (a newer producer took over) and
// broker or network trouble are not permanent.
var ErrPermanent = errors.New("kafkasrc: permanent error")

// permanentCodes are the Kafka error codes that a retry would repeat.
var permanentCodes = map[kafka.ErrorCode]string{
	kafka.ErrMsgSizeTooLarge:                    "raise the topic's max.message.bytes (and the producer's message.max.bytes) or make the record smaller",
	kafka.ErrRecordListTooLarge:                 "raise the topic's max.message.bytes (and the producer's message.max.bytes) or make the record smaller",
	kafka.ErrInvalidArg:                         "fix the producer properties",
	kafka.ErrUnknownTopicOrPart:                 "create the topic (the brokers do not create topics automatically)",
	kafka.ErrUnknownTopic:                       "create the topic (the brokers do not create topics automatically)",
	kafka.ErrUnknownPartition:                   "write to an existing partition or add partitions to the topic",
	kafka.ErrTopicAuthorizationFailed:           "grant the principal access to the topic",
	kafka.ErrGroupAuthorizationFailed:           "grant the principal access to the consumer group",
	kafka.ErrClusterAuthorizationFailed:         "grant the principal access to the cluster (IdempotentWrite)",
	kafka.ErrTransactionalIDAuthorizationFailed: "grant the principal access to the transactional id",
	kafka.ErrSaslAuthenticationFailed:           "fix the SASL credentials",
	kafka.ErrAuthentication:                     "fix the credentials",
	kafka.ErrUnsupportedFeature:                 "use a broker version that supports it",
	kafka.ErrInvalidTransactionTimeout:          "lower the transaction timeout to at most the brokers' transaction.max.timeout.ms",
}

// permanentHint returns what the user can do about err and true when err is
// a Kafka error that a retry would repeat.
func permanentHint(err error) (string, bool) {
	var ke kafka.Error
	if !errors.As(err, &ke) {
		return "", false
	}
	hint, ok := permanentCodes[ke.Code()]
	return hint, ok
}

// permanent wraps err with ErrPermanent, and says what to do, when a retry
// would repeat it (a Kafka error of permanentCodes or a refused property).
// Other errors are returned unchanged.
func permanent(err error) error {
	switch {
	case err == nil, errors.Is(err, ErrPermanent):
		return err
	case errors.Is(err, ErrReservedProperty):
		return fmt.Errorf("%w: %w", err, ErrPermanent)
	}
	if hint, ok := permanentHint(err); ok {
		return fmt.Errorf("%w (%s): %w", err, hint, ErrPermanent)
	}
	return err
}
