package pgjournal_test
func fleetChild() int { return 0 }
const fleetChildEnv = "SAFEGEN_PGJOURNAL_FLEET_CHILD"
