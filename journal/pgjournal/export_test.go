package pgjournal

// Migrations exposes the schema steps to the tests of an upgrade from an
// older schema version.
var Migrations = migrations
