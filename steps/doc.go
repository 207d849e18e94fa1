// Package steps compiles a job's CEL steps and aggregation and runs them over
// records.
//
// [Compile] type-checks every expression of a [sluicev1.JobSpec] once, on the
// coordinator at submit time and on each worker; a [Program] is immutable and
// shared by all the tasks of a worker. Each task makes its own [Runner], feeds it
// the records of its offset range with [Runner.Process] and reads the outcome
// with [Runner.Result]: partial aggregates per key, or the output records when
// the job does not aggregate, routed when the job writes to a Kafka sink.
// A caller that writes its output as it goes (the Kafka sink) takes the output
// records a chunk at a time with [Runner.Drain], and [Runner.SetOutputLimit]
// bounds what a runner keeps (output records, or per-key state) with an
// [*OutputLimitError]. [Merge] adds up the partial aggregates of several
// tasks. A worker makes its
// runners with [Program.NewRunnerContext], so that a cancelled task stops
// evaluating.
//
// # Variables
//
// Every expression sees one record:
//
//	key          string     the record key (UTF-8 is not checked)
//	value        string     the record value
//	key_bytes    bytes      the record key
//	value_bytes  bytes      the record value
//	json         dyn        the value parsed as JSON: objects are maps, arrays
//	                        lists, numbers doubles
//	headers      map(string, string)  the record headers; the last one wins
//	                        when a header repeats
//	topic        string
//	partition    int
//	offset       int
//	timestamp    google.protobuf.Timestamp
//	record       dyn        the source value decoded from a Schema Registry
//	                        format (source.value_format avro, protobuf or
//	                        jsonschema), by the Runner's Decoder
//	record_key   dyn        the source key, decoded likewise (key_format)
//
// record and record_key are decoded before the steps run, for every record
// ([Runner.SetDecoders]); a key or value that does not decode is a record
// error named by source.value_format or source.key_format. Map steps do not
// change them. An expression reading them without the format is refused by
// Compile.
//
// A variable is computed only when an expression reads it, at most once per
// record: a job whose steps never mention json never parses a value, so values
// that are not JSON pass through it untouched. After a map step, later steps
// and the aggregation see the new key and value (json then parses the new
// value).
//
// JSON numbers are doubles. Comparisons across numeric types work
// (json.ms > 100), arithmetic does not: write json.ms + 1.0 or int(json.ms) + 1.
//
// # Functions
//
// The CEL standard library, optional types (json.?field.orValue(x)) and these
// extensions of cel-go's ext package:
//
//   - strings: charAt, indexOf, lastIndexOf, lowerAscii, upperAscii, replace,
//     split, substring, trim, join, reverse, format, strings.quote
//   - encoders: base64.encode, base64.decode, json.encode, json.parse,
//     yaml.encode, yaml.parse (json.encode(...) and json.parse(...) are these
//     functions; json.field is the variable)
//   - math: math.greatest, math.least, math.abs, math.ceil, math.floor,
//     math.round, math.trunc, math.sign, math.sqrt, math.isNaN, math.isInf,
//     math.bitAnd and the other bit operations
//   - lists: slice, flatten, distinct, reverse, sort, sortBy, lists.range
//   - sets: sets.contains, sets.equivalent, sets.intersects
//   - regex: regex.extract, regex.extractAll, regex.replace
//   - bindings: cel.bind(name, init, expr)
//
// Times use UTC unless a time zone is given: timestamp.getHours() is the UTC
// hour.
//
// # Steps
//
// A filter must give a bool (or dyn that is a bool at run time); false drops
// the record. A map step replaces the key and/or the value: strings and bytes
// are taken as they are, numbers and bools are formatted (doubles as JSON
// writes them: 1234567, 0.5, 1e+21), null is empty, lists and maps are written
// as JSON with sorted keys, timestamps and durations as CEL formats them.
//
// # Aggregation
//
// The aggregate key is formatted like a map result and must be a string, bytes,
// number or bool; empty means the record key. Keys are told apart by their
// exact bytes. A key that is not valid UTF-8 (a proto3 string must be) is
// written in KeyAggregate.key with \xNN for each invalid byte, and its exact
// bytes are in key_bytes ([ExactKey] reads either). The value must be a number; it is
// required by SUM, MIN, MAX and AVG, and when it is set every KeyAggregate has
// sum, min, max and avg filled whatever the functions asked for.
//
// # Kafka sink
//
// When spec.sink is a KafkaSink, its routing expressions are compiled with the
// steps and evaluated on each record as it leaves them: key, value, key_bytes,
// value_bytes and json are those of the last map step; topic, partition,
// offset, headers and timestamp are still the source record's. Every
// OutputRecord then carries:
//
//   - SinkTopic: sink.kafka.topic, or the result of sink.kafka.topic_expr (a
//     string that must be a legal Kafka topic name); exactly one of the two is
//     set.
//   - SinkPartition: the result of sink.kafka.partition_expr, an int (or uint)
//     from 0 to 2147483647; -1, the producer's partitioner by key, when it is
//     empty. A double is refused: write int(json.p).
//   - Headers: one per entry of sink.kafka.headers, in header name order, the
//     value being its expression's string or bytes. Only these: the source
//     record's headers are not copied (an expression can, e.g.
//     headers.trace), and the sluice-job, sluice-batch and sluice-src headers
//     are added by the worker, so user names starting with "sluice-" (in any
//     case) are refused.
//
// A routing expression that cannot be evaluated, or that gives an illegal
// topic or partition, is a record error like a step's: the record is counted
// as failed, not out. A Kafka sink cannot follow an aggregate (tasks write
// their own output, and per-key totals only exist once the batch is merged).
//
// # Cost
//
// One evaluation of one expression on one record may cost at most
// [MaxEvalCost] (cel-go's cost units: about one per operation, a few per loop
// iteration; some 40ms). Compile refuses an expression that would exceed it
// whatever the record, such as lists.range(100000).all(i,
// lists.range(100000).all(j, j >= 0)). Loops over the record's data (its JSON
// lists, value.split(...)) cannot be judged before the data is seen: their
// evaluations are metered, and one that exceeds the limit fails that record. A
// metered evaluation also stops soon after the runner's context is done.
// l.distinct() and the sets functions refuse lists whose pairs exceed
// [MaxPairs], since nothing can stop them once started.
//
// # Errors
//
// A record that an expression cannot evaluate (invalid JSON, a missing field, a
// type error, a filter that does not give a bool, a routing expression that
// gives no legal topic or partition) fails the task under
// RECORD_ERROR_POLICY_FAIL (the default) with a [*RecordError], or is counted
// in Result.Failed and skipped under RECORD_ERROR_POLICY_SKIP. A record error
// names the topic, partition, offset and field, adds a hint when a JSON
// double met an int ("JSON numbers are doubles: write int(json.x) % 3"), and
// is valid UTF-8 of at most [MaxErrorBytes], since CEL errors may quote record
// content; [ErrorText] does the same for any error. Compile errors
// are [*FieldError]s; those of a Kafka sink name sink.kafka (with an
// aggregate), sink.kafka.topic, sink.kafka.topic_expr,
// sink.kafka.partition_expr or sink.kafka.headers["name"].
package steps
