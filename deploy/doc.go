// Package deploy holds what operators deploy the relay with (Kubernetes
// manifests, a systemd unit, Prometheus alert rules, a Grafana dashboard)
// and the tests that keep them true: the manifests decode strictly into
// the Kubernetes API types and agree with each other and with the relay's
// config, and every metric the rules and the dashboard name is one a
// running relay exports.
//
// It is a module of its own so that the Kubernetes and Prometheus modules
// the tests need stay out of the relay's dependencies (and its image
// build); .ci/run tests it.
package deploy
