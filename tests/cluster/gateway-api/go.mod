// Pins the Gateway API release whose CRDs tests/cluster/up installs (from the
// module's config/crd/experimental directory). It is a module of its own so
// that its requirements do not change the versions the test cluster binary
// is built with. gateway-api v1.4.x is what the gateway-api 0.22 crate is
// generated from.
module serin.dev/testcluster/gatewayapi

go 1.24.0

require sigs.k8s.io/gateway-api v1.4.1
