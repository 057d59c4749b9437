package main

// The test node: a kubelet stand-in that runs each Pod's containers as local
// processes. It registers a Node, keeps it alive with a Lease, binds Pending
// Pods to itself (there is no scheduler), gives each Pod an address from
// 198.18.0.0/15, starts its containers (see images.go), probes them and
// writes Pod status, and stops the processes when the Pod is deleted.
//
// The addresses are usable because the test command runs the whole cluster in
// a network namespace where the range is routed to the loopback device
// ("ip route add local 198.18.0.0/15 dev lo"): a process can bind any of them.

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

const (
	nodeLeaseSeconds  = 40
	nodeHeartbeat     = 10 * time.Second
	defaultPodCIDR    = "198.18.0.0/15"
	kubeletVersion    = "v1.34.4"
	defaultSchedName  = "default-scheduler"
	nodeStatusTimeout = 10 * time.Second
)

// testNode is the node's shared state; each Pod is run by its own podWorker.
type testNode struct {
	name   string
	client kubernetes.Interface
	ip     netip.Addr
	ips    *ipPool
	images imageTable
	dir    string // per-Pod logs: DIR/<namespace>_<name>/<container>.log

	mu      sync.Mutex
	workers map[types.UID]*podWorker
	wg      sync.WaitGroup
}

func runNode(args []string) int {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", defaultKubeconfig(), "kubeconfig of the cluster")
	name := fs.String("name", "serin-node", "Node name")
	dir := fs.String("dir", "", "directory for the Pods' logs (required)")
	cidr := fs.String("pod-cidr", defaultPodCIDR, "Pod addresses; the first is the node's own")
	testapp := fs.String("testapp", "", "the test app binary, run for podinfo and serin.dev/testapp images")
	var extra imageFlags
	fs.Var(&extra, "image", "REPOSITORY=BINARY: run BINARY with the container's args for that image repository (repeatable)")
	if err := fs.Parse(reorderFlags(fs, args)); err != nil {
		return 2
	}
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "node: --dir is required")
		return 2
	}
	prefix, err := netip.ParsePrefix(*cidr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "node: --pod-cidr: %v\n", err)
		return 2
	}
	cfg, err := restConfig(*kubeconfig)
	if err != nil {
		fmt.Fprintf(os.Stderr, "node: %v\n", err)
		return 2
	}
	cfg.UserAgent = "serin-testnode"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "node: %v\n", err)
		return 1
	}
	images, err := newImageTable(*testapp, extra)
	if err != nil {
		fmt.Fprintf(os.Stderr, "node: %v\n", err)
		return 2
	}
	pool := newIPPool(prefix)
	n := &testNode{
		name:    *name,
		client:  client,
		ip:      pool.reserveFirst(),
		ips:     pool,
		images:  images,
		dir:     *dir,
		workers: map[types.UID]*podWorker{},
	}
	if err := os.MkdirAll(n.dir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "node: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		cancel()
	}()
	if err := n.run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "node: %v\n", err)
		return 1
	}
	return 0
}

func (n *testNode) run(ctx context.Context) error {
	if err := n.register(ctx); err != nil {
		return fmt.Errorf("registering Node %s: %w", n.name, err)
	}
	logf("node %s registered (address %s, Pods from %s)", n.name, n.ip, n.ips.prefix)
	go n.heartbeat(ctx)

	factory := informers.NewSharedInformerFactory(n.client, 0)
	pods := factory.Core().V1().Pods().Informer()
	_, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { n.observe(ctx, obj) },
		UpdateFunc: func(_, obj any) { n.observe(ctx, obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				n.gone(pod.UID)
			}
		},
	})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	logf("watching Pods")
	<-ctx.Done()
	logf("stopping: terminating every Pod process")
	n.mu.Lock()
	for _, w := range n.workers {
		w.shutdown()
	}
	n.mu.Unlock()
	n.wg.Wait()
	factory.Shutdown()
	return nil
}

// observe handles every Pod event: binds unscheduled Pods, hands this node's
// Pods to their workers.
func (n *testNode) observe(ctx context.Context, obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if pod.Spec.NodeName == "" {
		if pod.DeletionTimestamp == nil && schedulable(pod) {
			go n.bind(ctx, pod)
		}
		return
	}
	if pod.Spec.NodeName != n.name {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	w, ok := n.workers[pod.UID]
	if !ok {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			if pod.DeletionTimestamp != nil {
				// Nothing runs for it any more: finish its deletion.
				go n.finishDeletion(ctx, pod)
			}
			return
		}
		w = newPodWorker(n, pod)
		n.workers[pod.UID] = w
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			w.run(ctx)
			n.mu.Lock()
			delete(n.workers, pod.UID)
			n.mu.Unlock()
		}()
		return
	}
	w.update(pod)
}

// gone: the Pod object was removed (by its final delete, or forcibly).
func (n *testNode) gone(uid types.UID) {
	n.mu.Lock()
	w := n.workers[uid]
	n.mu.Unlock()
	if w != nil {
		w.removed()
	}
}

func schedulable(pod *corev1.Pod) bool {
	return pod.Spec.SchedulerName == "" || pod.Spec.SchedulerName == defaultSchedName
}

// bind assigns a Pending Pod to this node, as the scheduler would.
func (n *testNode) bind(ctx context.Context, pod *corev1.Pod) {
	binding := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: n.name},
	}
	for attempt := 0; attempt < 5; attempt++ {
		err := n.client.CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{})
		if err == nil || apierrors.IsConflict(err) || apierrors.IsNotFound(err) || ctx.Err() != nil {
			// Conflict: already bound (an earlier event's bind won).
			return
		}
		logf("binding %s/%s: %v", pod.Namespace, pod.Name, err)
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
}

// finishDeletion removes a terminated Pod's object, as the kubelet does once
// its containers are gone.
func (n *testNode) finishDeletion(ctx context.Context, pod *corev1.Pod) {
	err := n.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && ctx.Err() == nil {
		logf("deleting %s/%s: %v", pod.Namespace, pod.Name, err)
	}
}

func (n *testNode) podDir(pod *corev1.Pod) string {
	return filepath.Join(n.dir, pod.Namespace+"_"+pod.Name)
}

// register creates (or takes over) the Node object and marks it Ready.
func (n *testNode) register(ctx context.Context) error {
	nodes := n.client.CoreV1().Nodes()
	want := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: n.name,
			Labels: map[string]string{
				"kubernetes.io/hostname": n.name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     runtime.GOARCH,
				"type":                   "serin-test-node",
			},
		},
		Spec: corev1.NodeSpec{PodCIDR: n.ips.prefix.String(), PodCIDRs: []string{n.ips.prefix.String()}},
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := nodes.Create(ctx, want, metav1.CreateOptions{})
		if err == nil || apierrors.IsAlreadyExists(err) {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(500 * time.Millisecond)
	}
	return n.writeNodeStatus(ctx)
}

func (n *testNode) writeNodeStatus(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, nodeStatusTimeout)
	defer cancel()
	nodes := n.client.CoreV1().Nodes()
	node, err := nodes.Get(ctx, n.name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	now := metav1.Now()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("32"),
		corev1.ResourceMemory:           resource.MustParse("64Gi"),
		corev1.ResourcePods:             resource.MustParse("1000"),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	condition := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, message string) corev1.NodeCondition {
		c := corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: message, LastHeartbeatTime: now, LastTransitionTime: now}
		for _, old := range node.Status.Conditions {
			if old.Type == t && old.Status == s {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	node.Status = corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{
			condition(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "serin test node"),
			condition(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "serin test node"),
			condition(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "serin test node"),
			condition(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "serin test node runs Pods as local processes"),
		},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: n.ip.String()},
			{Type: corev1.NodeHostName, Address: n.name},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 0}},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion:          kubeletVersion,
			KubeProxyVersion:        kubeletVersion,
			OperatingSystem:         "linux",
			Architecture:            runtime.GOARCH,
			ContainerRuntimeVersion: "serin-testnode://1",
			OSImage:                 "serin test node",
		},
	}
	_, err = nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}

// heartbeat renews the node Lease and the Ready condition, so the node
// lifecycle controller never marks the node NotReady (nor evicts its Pods).
func (n *testNode) heartbeat(ctx context.Context) {
	leases := n.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	tick := time.NewTicker(nodeHeartbeat)
	defer tick.Stop()
	for {
		if err := n.renewLease(ctx, leases); err != nil && ctx.Err() == nil {
			logf("node lease: %v", err)
		}
		if err := n.writeNodeStatus(ctx); err != nil && ctx.Err() == nil {
			logf("node status: %v", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (n *testNode) renewLease(ctx context.Context, leases interface {
	Get(context.Context, string, metav1.GetOptions) (*coordinationv1.Lease, error)
	Create(context.Context, *coordinationv1.Lease, metav1.CreateOptions) (*coordinationv1.Lease, error)
	Update(context.Context, *coordinationv1.Lease, metav1.UpdateOptions) (*coordinationv1.Lease, error)
}) error {
	ctx, cancel := context.WithTimeout(ctx, nodeStatusTimeout)
	defer cancel()
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, n.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		node, err := n.client.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{
				Name:      n.name,
				Namespace: corev1.NamespaceNodeLease,
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: "v1", Kind: "Node", Name: n.name, UID: node.UID,
				}},
			},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(n.name),
				LeaseDurationSeconds: ptr.To[int32](nodeLeaseSeconds),
				RenewTime:            &now,
			},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	lease.Spec.HolderIdentity = ptr.To(n.name)
	lease.Spec.LeaseDurationSeconds = ptr.To[int32](nodeLeaseSeconds)
	lease.Spec.RenewTime = &now
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	return err
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s node: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// ipPool hands out Pod addresses from a prefix, oldest-released first, so a
// deleted Pod's address is not reused at once.
type ipPool struct {
	mu     sync.Mutex
	prefix netip.Prefix
	next   netip.Addr
	free   []netip.Addr
	inUse  map[netip.Addr]bool
}

func newIPPool(prefix netip.Prefix) *ipPool {
	prefix = prefix.Masked()
	return &ipPool{prefix: prefix, next: prefix.Addr().Next(), inUse: map[netip.Addr]bool{}}
}

// reserveFirst takes the first usable address (the node's own).
func (p *ipPool) reserveFirst() netip.Addr {
	a, _ := p.allocate()
	return a
}

func (p *ipPool) allocate() (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.next.IsValid() && p.prefix.Contains(p.next) {
		a := p.next
		p.next = a.Next()
		if !p.inUse[a] {
			p.inUse[a] = true
			return a, nil
		}
	}
	for len(p.free) > 0 {
		a := p.free[0]
		p.free = p.free[1:]
		if !p.inUse[a] {
			p.inUse[a] = true
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free Pod address left in %s", p.prefix)
}

// claim takes a given address (a Pod that already had one, across a restart).
func (p *ipPool) claim(a netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.prefix.Contains(a) || p.inUse[a] {
		return false
	}
	p.inUse[a] = true
	return true
}

func (p *ipPool) release(a netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inUse[a] {
		delete(p.inUse, a)
		p.free = append(p.free, a)
	}
}
