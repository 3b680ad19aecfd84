// Package safegen is a Go client for billable generation APIs (image and
// video generation billed per call) that keeps one promise: a logical call is
// billed at most once, however the network, the server or the caller's own
// process fails, and it is never silently lost.
package safegen
