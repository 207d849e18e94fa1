package coordinator

// defaultInitialRate is the job-wide rate of the first batch, in records per
// second, before backpressure has measured anything.
const defaultInitialRate = 100_000
