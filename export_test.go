package safegen

// DecodeGenerationFast is the SDK's reflection-free decoder, for the
// benchmarks' floor (bench_test.go): the least a create can do, built from
// the fastest pieces the SDK has.
var DecodeGenerationFast = decodeGenerationFast
