package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	kubeapiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"

	// As in the kube-apiserver and kube-controller-manager main packages.
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	_ "time/tzdata"
)

const (
	// serviceCIDR is only configuration: the API server allocates Service
	// ClusterIPs from it, nothing on this machine routes or dials them.
	serviceCIDR = "10.96.0.0/16"
	saIssuer    = "https://kubernetes.default.svc.cluster.local"
)

// ports are chosen once per cluster directory and kept, so that a restarted
// cluster keeps its address (and DIR/kubeconfig stays valid).
type ports struct {
	APIServer  int `json:"apiserver"`
	EtcdClient int `json:"etcdClient"`
	EtcdPeer   int `json:"etcdPeer"`
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func loadOrPickPorts(path string, apiPort int) (ports, error) {
	var p ports
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &p); err != nil {
			return p, fmt.Errorf("%s: %w", path, err)
		}
	}
	if apiPort != 0 {
		p.APIServer = apiPort
	}
	seen := map[int]bool{}
	for _, f := range []*int{&p.APIServer, &p.EtcdClient, &p.EtcdPeer} {
		for *f == 0 || seen[*f] {
			n, err := freePort()
			if err != nil {
				return p, err
			}
			*f = n
		}
		seen[*f] = true
	}
	for _, n := range []int{p.APIServer, p.EtcdClient, p.EtcdPeer} {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(n)))
		if err != nil {
			return p, fmt.Errorf("port %d (kept in %s) is not free: %w; stop whatever uses it, or delete %s to pick new ports", n, path, err, path)
		}
		l.Close()
	}
	b, _ := json.MarshalIndent(p, "", "  ")
	return p, writeFileAtomic(path, append(b, '\n'), 0o644)
}

func writeKubeconfig(path string, k pki, port int) error {
	ca, err := os.ReadFile(k.caCert())
	if err != nil {
		return err
	}
	token, err := k.token()
	if err != nil {
		return err
	}
	// Written by hand (it is small) so that it stays readable and stable.
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: serin-test
  cluster:
    server: https://127.0.0.1:%d
    certificate-authority-data: %s
users:
- name: %s
  user:
    token: %s
contexts:
- name: serin-test
  context:
    cluster: serin-test
    user: %s
    namespace: default
current-context: serin-test
`, port, base64.StdEncoding.EncodeToString(ca), adminUser, token, adminUser)
	return writeFileAtomic(path, []byte(cfg), 0o600)
}

func startEtcd(dir string, p ports, logPath string) (*embed.Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = "serin-testcluster"
	cfg.Dir = filepath.Join(dir, "etcd")
	client := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(p.EtcdClient))}
	peer := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(p.EtcdPeer))}
	cfg.ListenClientUrls = []url.URL{client}
	cfg.AdvertiseClientUrls = []url.URL{client}
	cfg.ListenPeerUrls = []url.URL{peer}
	cfg.AdvertisePeerUrls = []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ListenMetricsUrls = nil
	// A throw-away test cluster: speed over durability.
	cfg.UnsafeNoFsync = true
	// Left at zero, every request would be logged as slow.
	cfg.WarningUnaryRequestDuration = embed.DefaultWarningUnaryRequestDuration
	cfg.Logger = "zap"
	cfg.LogLevel = "warn"
	cfg.LogOutputs = []string{logPath}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd: %w", err)
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		e.Close()
		return nil, errors.New("etcd did not become ready within 60s")
	}
}

func runServe(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	dirFlag := fs.String("dir", "", "cluster directory (data, credentials, kubeconfig, logs)")
	port := fs.Int("port", 0, "API server port on 127.0.0.1 (default: a free port, kept in DIR/ports.json)")
	noKCM := fs.Bool("no-controller-manager", false, "do not run kube-controller-manager")
	verbosity := fs.Int("v", 0, "klog verbosity of the Kubernetes components")
	noNode := fs.Bool("no-node", false, "do not run the test node (Pods then stay Pending)")
	testapp := fs.String("testapp", os.Getenv("SERIN_TESTAPP"), "the test app binary the node runs for podinfo images (default $SERIN_TESTAPP)")
	var images imageFlags
	fs.Var(&images, "image", "REPOSITORY=BINARY, passed on to the node (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dirFlag == "" {
		fmt.Fprintln(os.Stderr, "serve: --dir is required")
		return 2
	}
	dir, err := filepath.Abs(*dirFlag)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "serve: %v\n", err)
		return 1
	}
	k := pki{dir: filepath.Join(dir, "pki")}
	if err := k.ensure(); err != nil {
		fmt.Fprintf(os.Stderr, "serve: credentials: %v\n", err)
		return 1
	}
	p, err := loadOrPickPorts(filepath.Join(dir, "ports.json"), *port)
	if err != nil {
		fmt.Fprintf(os.Stderr, "serve: ports: %v\n", err)
		return 1
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, k, p.APIServer); err != nil {
		fmt.Fprintf(os.Stderr, "serve: kubeconfig: %v\n", err)
		return 1
	}
	pidFile := filepath.Join(dir, "serve.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "serve: %v\n", err)
		return 1
	}
	defer os.Remove(pidFile)

	fmt.Fprintf(os.Stderr, "serve: etcd on 127.0.0.1:%d, kube-apiserver on https://127.0.0.1:%d\n", p.EtcdClient, p.APIServer)
	etcd, err := startEtcd(dir, p, filepath.Join(dir, "etcd.log"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "serve: %v (see %s)\n", err, filepath.Join(dir, "etcd.log"))
		return 1
	}
	defer func() {
		etcd.Close()
		fmt.Fprintln(os.Stderr, "serve: etcd stopped")
	}()

	apiArgs := []string{
		"--etcd-servers=http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(p.EtcdClient)),
		"--bind-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(p.APIServer),
		"--advertise-address=127.0.0.1",
		// Loopback addresses are not valid Endpoints, so the "kubernetes"
		// Service is left without endpoints.
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range=" + serviceCIDR,
		"--cert-dir=" + k.dir,
		"--tls-cert-file=" + k.serverCert(),
		"--tls-private-key-file=" + k.serverKey(),
		"--client-ca-file=" + k.caCert(),
		"--token-auth-file=" + k.tokenFile(),
		"--service-account-issuer=" + saIssuer,
		"--service-account-key-file=" + k.saPub(),
		"--service-account-signing-key-file=" + k.saKey(),
		"--authorization-mode=RBAC",
		"--allow-privileged=true",
		"--profiling=false",
		"--v=" + strconv.Itoa(*verbosity),
	}

	// kube-apiserver installs its own SIGTERM/SIGINT handler (graceful
	// shutdown); this one only forwards the signal to the controller-manager.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()

	var wg sync.WaitGroup
	if !*noKCM {
		wg.Add(1)
		go func() {
			defer wg.Done()
			supervise(ctx, "kube-controller-manager", kubeconfig, filepath.Join(dir, "controller-manager.log"), kcmArgs(kubeconfig, k, *verbosity))
		}()
	}
	if !*noNode {
		nodeArgs := []string{"node", "--kubeconfig=" + kubeconfig, "--dir=" + filepath.Join(dir, "node")}
		if *testapp != "" {
			nodeArgs = append(nodeArgs, "--testapp="+*testapp)
		}
		for repo, bin := range images {
			nodeArgs = append(nodeArgs, "--image="+repo+"="+bin)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			supervise(ctx, "node", kubeconfig, filepath.Join(dir, "node.log"), nodeArgs)
		}()
	}

	cmd := kubeapiserver.NewAPIServerCommand()
	cmd.SetArgs(apiArgs)
	code := cli.Run(cmd)
	fmt.Fprintf(os.Stderr, "serve: kube-apiserver exited (%d)\n", code)
	cancel()
	wg.Wait()
	return code
}

func kcmArgs(kubeconfig string, k pki, verbosity int) []string {
	return []string{
		"controller-manager",
		"--kubeconfig=" + kubeconfig,
		"--secure-port=0",
		"--leader-elect=false",
		"--controllers=*",
		"--use-service-account-credentials=false",
		"--root-ca-file=" + k.caCert(),
		"--service-account-private-key-file=" + k.saKey(),
		"--cluster-signing-cert-file=" + k.caCert(),
		"--cluster-signing-key-file=" + k.caKey(),
		"--service-cluster-ip-range=" + serviceCIDR,
		"--cluster-name=serin-test",
		"--profiling=false",
		// The test node heartbeats every 10 s; a node that stops is noticed
		// after 40 s, as with the defaults.
		"--node-monitor-grace-period=40s",
		"--v=" + strconv.Itoa(verbosity),
	}
}

// supervise runs one of this binary's commands (kube-controller-manager, the
// test node) as a child process once the API server is ready (their global
// state, flags and signal handling do not mix well with kube-apiserver's in
// one process), and restarts it if it dies.
func supervise(ctx context.Context, name, kubeconfig, logPath string, args []string) {
	// Pdeathsig fires when the thread that started the child exits: keep
	// this goroutine on one thread for as long as the child runs.
	runtime.LockOSThread()
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "serve: %s: %v\n", name, err)
		return
	}
	if err := waitReady(ctx, kubeconfig, 10*time.Minute); err != nil {
		if ctx.Err() == nil {
			fmt.Fprintf(os.Stderr, "serve: %s not started: %v\n", name, err)
		}
		return
	}
	for attempt := 1; ctx.Err() == nil; attempt++ {
		logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintf(os.Stderr, "serve: %s: %v\n", name, err)
			return
		}
		c := exec.Command(self, args...)
		c.Stdout, c.Stderr = logf, logf
		// Never outlive serve, even if it is killed with SIGKILL.
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			logf.Close()
			fmt.Fprintf(os.Stderr, "serve: %s: %v\n", name, err)
			return
		}
		fmt.Fprintf(os.Stderr, "serve: %s started (pid %d, log %s)\n", name, c.Process.Pid, logPath)
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		select {
		case err := <-done:
			logf.Close()
			fmt.Fprintf(os.Stderr, "serve: %s exited: %v\n", name, err)
			if attempt >= 5 {
				fmt.Fprintf(os.Stderr, "serve: giving up on %s\n", name)
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		case <-ctx.Done():
			_ = c.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = c.Process.Kill()
				<-done
			}
			logf.Close()
			fmt.Fprintf(os.Stderr, "serve: %s stopped\n", name)
			return
		}
	}
}

func runControllerManager(args []string) int {
	cmd := kcm.NewControllerManagerCommand()
	cmd.SetArgs(args)
	return cli.Run(cmd)
}
