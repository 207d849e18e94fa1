// Package schema decodes record keys and values written in the Confluent
// Schema Registry wire format (magic byte 0, a 4-byte big-endian schema id,
// for Protobuf the message indexes, then the payload) with confluent-kafka-go's
// serde packages, into CEL values a job's expressions read as `record` and
// `record_key`.
//
// Types map to CEL as follows. Avro: boolean to bool; int and long to int;
// float and double to double; string, enum symbols and uuid to string; bytes
// and fixed to bytes; decimal to double; record and map to map (string keys);
// array to list; null to null; a union to its branch's value (["null",
// "string"] is null or a string); timestamp-millis/micros and date to timestamp;
// time-millis/micros to duration. Protobuf: all signed integer types to int,
// unsigned ones to uint, float and double to double, string to string, bytes
// to bytes, enums to their value's name (the number when unknown), messages
// to maps by field name (proto names), repeated to list, map fields to maps;
// google.protobuf.Timestamp to timestamp, Duration to duration, the wrapper
// types to their value, Struct/Value/ListValue to their JSON form; a field
// with presence (a message, an `optional` or oneof field) that is not set is
// null, other unset fields have their default. JSON Schema: the value as
// JSON, numbers as doubles, as the `json` variable has it.
package schema
