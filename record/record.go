// Package record defines a Kafka record as Sluice's steps and sources see it,
// so that the Kafka client stays an implementation detail of kafkasrc.
package record

import "time"

// Header is one Kafka record header.
type Header struct {
	Key   string
	Value []byte
}

// Record is one data record read from a partition. Key and Value may alias a
// buffer owned by the reader: they are valid only during the callback that
// receives the record.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []Header
	Timestamp time.Time
}
