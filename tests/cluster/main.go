// Command serin-testcluster runs a real, single-node Kubernetes control plane
// (etcd + kube-apiserver + kube-controller-manager) on loopback for
// integration tests, and carries the client tools the tests need.
//
// Subcommands:
//
//	serve --dir DIR                      run etcd + kube-apiserver (+ controller-manager) until SIGTERM
//	ready --kubeconfig FILE [--timeout D] wait until /readyz answers ok
//	apply --kubeconfig FILE [-n NS] FILE... server-side apply of multi-document YAML
//	kubectl ARGS...                       the kubectl of the same Kubernetes release
//	controller-manager ARGS...            kube-controller-manager (started by serve)
//	node --kubeconfig FILE --dir DIR      the test node: runs Pods as local processes (started by serve)
//	version                               print the versions built in
package main

import (
	"fmt"
	"os"
)

func usage() {
	fmt.Fprint(os.Stderr, `usage: serin-testcluster COMMAND [ARGS...]

commands:
  serve --dir DIR [--no-controller-manager] [--no-node] [--testapp BIN] [--image REPO=BIN]...
        run etcd + kube-apiserver (+ kube-controller-manager, + the test
        node) on 127.0.0.1 until SIGTERM/SIGINT; writes DIR/kubeconfig
  ready --kubeconfig FILE [--timeout 60s]
        wait until the API server's /readyz is ok
  apply --kubeconfig FILE [-n NAMESPACE] [--timeout 60s] FILE|DIR...
        server-side apply (force, field manager "serin-testcluster") of
        multi-document YAML; CRDs first, waiting for them to be Established
  kubectl ARGS...
        kubectl (same release), e.g. kubectl --kubeconfig DIR/kubeconfig get pods -A
  controller-manager ARGS...
        kube-controller-manager (serve starts it itself)
  node --kubeconfig FILE --dir DIR [--testapp BIN] [--image REPO=BIN]... [--name serin-node] [--pod-cidr 198.18.0.0/15]
        the test node (serve starts it): registers a Node, binds Pending
        Pods to it and runs their containers as local processes
  version
        print the Kubernetes / etcd versions built in
`)
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	var code int
	switch cmd {
	case "serve":
		code = runServe(args)
	case "ready":
		code = runReady(args)
	case "apply":
		code = runApply(args)
	case "kubectl":
		code = runKubectl(args)
	case "controller-manager", "kube-controller-manager":
		code = runControllerManager(args)
	case "node":
		code = runNode(args)
	case "version", "--version":
		code = runVersion()
	case "help", "-h", "--help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "serin-testcluster: unknown command %q\n\n", cmd)
		usage()
		code = 2
	}
	os.Exit(code)
}
