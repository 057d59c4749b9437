package main

// One Pod on the test node: its processes, probes and status.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

const (
	// Restart back-off: doubles from the first value up to the cap, and
	// starts again once a container has run for backoffReset. Shorter than
	// the kubelet's (10 s .. 5 min) so tests see restarts quickly.
	backoffFirst = time.Second
	backoffCap   = 20 * time.Second
	backoffReset = 30 * time.Second
	// How long processes get when the node itself stops.
	nodeStopGrace = 5 * time.Second
)

type podWorker struct {
	n   *testNode
	uid types.UID

	mu       sync.Mutex
	pod      *corev1.Pod
	kick     chan struct{}
	stopping chan struct{} // closed when the node stops
	gone     chan struct{} // closed when the Pod object is removed
	stopOnce sync.Once
	goneOnce sync.Once

	ip             netip.Addr
	startTime      metav1.Time
	containers     []*container
	lastStatus     []byte
	lastConditions []corev1.PodCondition // as last written (the informer's copy may lag)
}

type container struct {
	w    *podWorker
	spec corev1.Container

	mu           sync.Mutex
	cmd          *exec.Cmd
	running      bool
	startedAt    time.Time
	exited       chan struct{} // closed when the running process exits
	everStarted  bool
	terminated   *corev1.ContainerStateTerminated // of the last process
	lastTerm     *corev1.ContainerStateTerminated // the one before (lastState)
	restarts     int32
	waitReason   string
	waitMessage  string
	ready        bool
	started      bool // startup probe passed (or none)
	backoff      time.Duration
	backoffUntil time.Time
	probeCancel  context.CancelFunc
	killedFor    string // why the node killed the process (liveness), for the log
}

func newPodWorker(n *testNode, pod *corev1.Pod) *podWorker {
	w := &podWorker{
		n:        n,
		uid:      pod.UID,
		pod:      pod,
		kick:     make(chan struct{}, 1),
		stopping: make(chan struct{}),
		gone:     make(chan struct{}),
	}
	for i := range pod.Spec.Containers {
		c := &container{w: w, spec: pod.Spec.Containers[i], waitReason: "ContainerCreating"}
		for _, st := range pod.Status.ContainerStatuses {
			if st.Name == c.spec.Name {
				// The node restarted: its processes are gone, so this is a restart.
				c.restarts = st.RestartCount
				if st.State.Running != nil || st.State.Terminated != nil {
					c.restarts++
					c.everStarted = true
				}
			}
		}
		w.containers = append(w.containers, c)
	}
	return w
}

func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	w.pod = pod
	w.mu.Unlock()
	w.poke()
}

func (w *podWorker) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *podWorker) current() *corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod
}

func (w *podWorker) shutdown() { w.stopOnce.Do(func() { close(w.stopping) }) }
func (w *podWorker) removed()  { w.goneOnce.Do(func() { close(w.gone) }) }

func (w *podWorker) name() string {
	pod := w.current()
	return pod.Namespace + "/" + pod.Name
}

// run is the Pod's whole life on the node.
func (w *podWorker) run(ctx context.Context) {
	pod := w.current()
	if a, err := netip.ParseAddr(pod.Status.PodIP); err == nil && w.n.ips.claim(a) {
		w.ip = a
	} else {
		a, err := w.n.ips.allocate()
		if err != nil {
			logf("%s: %v", w.name(), err)
			return
		}
		w.ip = a
	}
	defer w.n.ips.release(w.ip)
	w.startTime = metav1.Now()
	if pod.Status.StartTime != nil {
		w.startTime = *pod.Status.StartTime
	}
	if err := os.MkdirAll(w.n.podDir(pod), 0o755); err != nil {
		logf("%s: %v", w.name(), err)
	}
	logf("%s: starting on %s", w.name(), w.ip)

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		pod = w.current()
		select {
		case <-w.stopping:
			w.stopAll(nodeStopGrace)
			return
		case <-w.gone:
			w.stopAll(2 * time.Second)
			logf("%s: removed; processes stopped", w.name())
			return
		default:
		}
		if pod.DeletionTimestamp != nil {
			w.terminate(ctx, pod)
			return
		}
		for _, c := range w.containers {
			c.reconcile(ctx, pod)
		}
		w.writeStatus(ctx, pod, false)
		if w.finished(pod) {
			logf("%s: all containers finished", w.name())
			// Wait for the deletion (or the node's end); nothing more to run.
			select {
			case <-w.stopping:
			case <-w.gone:
			case <-ctx.Done():
			}
			return
		}
		select {
		case <-w.kick:
		case <-tick.C:
		case <-w.stopping:
		case <-w.gone:
		case <-ctx.Done():
			w.stopAll(nodeStopGrace)
			return
		}
	}
}

// finished: every container has exited and will not be restarted.
func (w *podWorker) finished(pod *corev1.Pod) bool {
	for _, c := range w.containers {
		c.mu.Lock()
		done := !c.running && c.terminated != nil && !c.willRestart(pod)
		c.mu.Unlock()
		if !done {
			return false
		}
	}
	return len(w.containers) > 0
}

// terminate: the Pod is being deleted. preStop hooks, SIGTERM, the grace
// period, SIGKILL; then the final status and the object's removal.
func (w *podWorker) terminate(ctx context.Context, pod *corev1.Pod) {
	grace := 30 * time.Second
	if pod.DeletionGracePeriodSeconds != nil {
		grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	} else if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	logf("%s: deleting, grace period %s", w.name(), grace)
	deadline := time.Now().Add(grace)
	var wg sync.WaitGroup
	for _, c := range w.containers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.preStop(ctx, pod, deadline)
			c.stop(time.Until(deadline))
		}()
	}
	wg.Wait()
	w.writeStatus(ctx, pod, true)
	w.n.finishDeletion(ctx, pod)
	logf("%s: deleted", w.name())
}

func (w *podWorker) stopAll(grace time.Duration) {
	var wg sync.WaitGroup
	for _, c := range w.containers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.stop(grace)
		}()
	}
	wg.Wait()
}

// reconcile starts the container when it should run and does not.
func (c *container) reconcile(ctx context.Context, pod *corev1.Pod) {
	c.mu.Lock()
	if c.running {
		c.mu.Unlock()
		return
	}
	if c.everStarted {
		if !c.willRestart(pod) {
			c.mu.Unlock()
			return
		}
		if time.Now().Before(c.backoffUntil) {
			c.waitReason = "CrashLoopBackOff"
			c.waitMessage = fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", c.backoff, c.spec.Name, pod.Name)
			c.mu.Unlock()
			return
		}
	}
	c.mu.Unlock()
	c.start(ctx, pod)
}

// willRestart: the restart policy asks for another process after this one.
// Called with c.mu held.
func (c *container) willRestart(pod *corev1.Pod) bool {
	switch pod.Spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return c.terminated != nil && c.terminated.ExitCode != 0
	default:
		return true
	}
}

func (c *container) start(ctx context.Context, pod *corev1.Pod) {
	w := c.w
	l, err := w.n.images.launchFor(&c.spec, pod.Name, w.ip.String())
	if err != nil {
		c.setWaiting("ErrImagePull", err.Error())
		return
	}
	env, err := containerEnv(ctx, w.n.client, pod, &c.spec, w.ip.String(), w.n.ip.String())
	if err != nil {
		reason := "CreateContainerConfigError"
		var ce errConfig
		if !errors.As(err, &ce) {
			reason = "CreateContainerError"
		}
		c.setWaiting(reason, err.Error())
		return
	}
	logPath := filepath.Join(w.n.podDir(pod), c.spec.Name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.setWaiting("CreateContainerError", err.Error())
		return
	}
	cmd := exec.Command(l.binary, l.args...)
	cmd.Env = env
	cmd.Dir = w.n.podDir(pod)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group (stopped as a whole), and never outliving the node.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		c.setWaiting("RunContainerError", err.Error())
		return
	}
	logFile.Close()
	probeCtx, cancel := context.WithCancel(ctx)
	c.mu.Lock()
	if c.everStarted {
		c.restarts++
		c.lastTerm = c.terminated
	}
	c.everStarted = true
	c.cmd = cmd
	c.running = true
	c.startedAt = time.Now()
	c.exited = make(chan struct{})
	c.terminated = nil
	c.waitReason, c.waitMessage = "", ""
	c.ready = false
	c.started = c.spec.StartupProbe == nil
	c.probeCancel = cancel
	c.killedFor = ""
	exited := c.exited
	c.mu.Unlock()
	logf("%s: container %s started: pid %d, %s %v", w.name(), c.spec.Name, cmd.Process.Pid, filepath.Base(l.binary), l.args)

	go func() {
		err := cmd.Wait()
		cancel()
		code := int32(0)
		signal := int32(0)
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				signal = int32(ws.Signal())
				code = 128 + signal
			} else {
				code = int32(exitErr.ExitCode())
			}
		} else if err != nil {
			code = 128
		}
		reason := "Completed"
		if code != 0 {
			reason = "Error"
		}
		c.mu.Lock()
		if c.killedFor != "" {
			reason = c.killedFor
		}
		ran := time.Since(c.startedAt)
		c.terminated = &corev1.ContainerStateTerminated{
			ExitCode:    code,
			Signal:      signal,
			Reason:      reason,
			StartedAt:   metav1.NewTime(c.startedAt),
			FinishedAt:  metav1.Now(),
			ContainerID: c.containerID(),
		}
		c.running = false
		c.ready = false
		if ran >= backoffReset || c.backoff == 0 {
			c.backoff = backoffFirst
		} else {
			c.backoff = min(2*c.backoff, backoffCap)
		}
		c.backoffUntil = time.Now().Add(c.backoff)
		c.mu.Unlock()
		close(exited)
		logf("%s: container %s exited: code %d (%s) after %s", w.name(), c.spec.Name, code, reason, ran.Round(time.Millisecond))
		w.poke()
	}()
	go c.probe(probeCtx, pod)
}

func (c *container) setWaiting(reason, message string) {
	c.mu.Lock()
	changed := c.waitReason != reason || c.waitMessage != message
	c.waitReason, c.waitMessage = reason, message
	c.mu.Unlock()
	if changed {
		logf("%s: container %s: %s: %s", c.w.name(), c.spec.Name, reason, message)
	}
}

// containerID names the current process; called with c.mu held.
func (c *container) containerID() string {
	if c.cmd == nil || c.cmd.Process == nil {
		return ""
	}
	return fmt.Sprintf("serin://%s-%d", c.spec.Name, c.cmd.Process.Pid)
}

// stop sends SIGTERM to the process group, waits up to grace, then SIGKILL.
func (c *container) stop(grace time.Duration) {
	c.mu.Lock()
	if !c.running {
		c.mu.Unlock()
		return
	}
	pid := c.cmd.Process.Pid
	exited := c.exited
	c.mu.Unlock()
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	if grace < 0 {
		grace = 0
	}
	select {
	case <-exited:
		return
	case <-time.After(grace):
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-exited
}

// preStop runs the container's preStop hook (httpGet or sleep), bounded by
// the deletion deadline.
func (c *container) preStop(ctx context.Context, pod *corev1.Pod, deadline time.Time) {
	if c.spec.Lifecycle == nil || c.spec.Lifecycle.PreStop == nil {
		return
	}
	c.mu.Lock()
	running := c.running
	c.mu.Unlock()
	if !running {
		return
	}
	h := c.spec.Lifecycle.PreStop
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	switch {
	case h.Sleep != nil:
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(h.Sleep.Seconds) * time.Second):
		}
	case h.HTTPGet != nil:
		if err := c.httpGet(ctx, h.HTTPGet, time.Until(deadline)); err != nil {
			logf("%s: container %s: preStop hook: %v", c.w.name(), c.spec.Name, err)
		}
	case h.Exec != nil:
		logf("%s: container %s: exec preStop hooks are not supported by the test node; skipped", c.w.name(), c.spec.Name)
	}
}

// probe runs the startup, readiness and liveness probes of one process until
// it exits.
func (c *container) probe(ctx context.Context, pod *corev1.Pod) {
	spec := c.spec
	readinessResults := make(chan bool, 1)
	if spec.StartupProbe != nil {
		if !c.runProbe(ctx, spec.StartupProbe, "startup", nil) {
			return
		}
		c.mu.Lock()
		c.started = true
		c.mu.Unlock()
		c.w.poke()
	}
	if spec.ReadinessProbe == nil {
		c.mu.Lock()
		c.ready = true
		c.mu.Unlock()
		c.w.poke()
	} else {
		go c.runProbe(ctx, spec.ReadinessProbe, "readiness", readinessResults)
	}
	if spec.LivenessProbe != nil {
		go c.runProbe(ctx, spec.LivenessProbe, "liveness", nil)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ok := <-readinessResults:
			c.mu.Lock()
			changed := c.ready != ok
			c.ready = ok
			c.mu.Unlock()
			if changed {
				c.w.poke()
			}
		}
	}
}

// runProbe probes until the context ends. Readiness reports each settled
// result (after successThreshold / failureThreshold in a row) on results;
// a startup probe returns true once it succeeds and kills the process when
// it fails failureThreshold times; liveness kills the process at
// failureThreshold.
func (c *container) runProbe(ctx context.Context, p *corev1.Probe, kind string, results chan bool) bool {
	period := time.Duration(max(p.PeriodSeconds, 1)) * time.Second
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	successNeeded := max(p.SuccessThreshold, 1)
	failuresAllowed := max(p.FailureThreshold, 1)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Duration(p.InitialDelaySeconds) * time.Second):
	}
	var successes, failures int32
	settled := -1 // -1 unknown, 0 failing, 1 passing
	for {
		err := c.check(ctx, p, timeout)
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			successes++
			failures = 0
		} else {
			failures++
			successes = 0
		}
		switch kind {
		case "startup":
			if err == nil {
				return true
			}
			if failures >= failuresAllowed {
				c.kill(fmt.Sprintf("startup probe failed: %v", err))
				return false
			}
		case "liveness":
			if failures >= failuresAllowed {
				c.kill(fmt.Sprintf("liveness probe failed: %v", err))
				return false
			}
		case "readiness":
			var report *bool
			if err == nil && successes >= successNeeded && settled != 1 {
				settled = 1
				report = ptr.To(true)
			} else if err != nil && failures >= failuresAllowed && settled != 0 {
				if settled == 1 {
					logf("%s: container %s: readiness probe failed: %v", c.w.name(), c.spec.Name, err)
				}
				settled = 0
				report = ptr.To(false)
			}
			if report != nil {
				select {
				case results <- *report:
				case <-ctx.Done():
					return false
				}
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(period):
		}
	}
}

// kill ends a process whose probe failed; the restart policy then decides.
func (c *container) kill(why string) {
	logf("%s: container %s: %s, killing it", c.w.name(), c.spec.Name, why)
	c.mu.Lock()
	c.killedFor = "Error"
	c.mu.Unlock()
	pod := c.w.current()
	grace := 30 * time.Second
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	go c.stop(grace)
}

func (c *container) check(ctx context.Context, p *corev1.Probe, timeout time.Duration) error {
	switch {
	case p.HTTPGet != nil:
		return c.httpGet(ctx, p.HTTPGet, timeout)
	case p.TCPSocket != nil:
		port, err := c.resolvePort(p.TCPSocket.Port)
		if err != nil {
			return err
		}
		host := p.TCPSocket.Host
		if host == "" {
			host = c.w.ip.String()
		}
		d := net.Dialer{Timeout: timeout}
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case p.Exec != nil:
		return errors.New("exec probes are not supported by the serin test node")
	case p.GRPC != nil:
		return errors.New("grpc probes are not supported by the serin test node")
	}
	return errors.New("probe has no handler")
}

func (c *container) httpGet(ctx context.Context, g *corev1.HTTPGetAction, timeout time.Duration) error {
	port, err := c.resolvePort(g.Port)
	if err != nil {
		return err
	}
	host := g.Host
	if host == "" {
		host = c.w.ip.String()
	}
	scheme := "http"
	if g.Scheme == corev1.URISchemeHTTPS {
		scheme = "https"
	}
	path := g.Path
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, strconv.Itoa(port))+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "kube-probe/1.34")
	for _, h := range g.HTTPHeaders {
		if h.Name == "Host" {
			req.Host = h.Value
		} else {
			req.Header.Add(h.Name, h.Value)
		}
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
	}
	return nil
}

// probeClient: no keep-alive (as the kubelet), no redirects followed to other
// hosts, TLS unverified (as the kubelet's HTTPS probes).
var probeClient = &http.Client{
	Transport: &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as the kubelet
		Proxy:             nil,
	},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func (c *container) resolvePort(p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, cp := range c.spec.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("port %q is not a named port of container %s", p.StrVal, c.spec.Name)
}

// status returns the container's status as the kubelet reports it.
func (c *container) status(pod *corev1.Pod) corev1.ContainerStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := corev1.ContainerStatus{
		Name:         c.spec.Name,
		Image:        c.spec.Image,
		ImageID:      c.spec.Image,
		RestartCount: c.restarts,
		Ready:        c.running && c.ready,
		Started:      ptr.To(c.running && c.started),
	}
	switch {
	case c.running:
		st.ContainerID = c.containerID()
		st.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(c.startedAt)}
		if c.lastTerm != nil {
			st.LastTerminationState.Terminated = c.lastTerm
		}
	case c.terminated != nil && (!c.willRestart(pod) || pod.DeletionTimestamp != nil || c.waitReason == ""):
		st.ContainerID = c.terminated.ContainerID
		st.State.Terminated = c.terminated
		if c.lastTerm != nil {
			st.LastTerminationState.Terminated = c.lastTerm
		}
	default:
		reason := c.waitReason
		if reason == "" {
			reason = "ContainerCreating"
		}
		st.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: c.waitMessage}
		if c.terminated != nil {
			st.LastTerminationState.Terminated = c.terminated
		}
	}
	return st
}

// writeStatus computes the Pod's status and writes it through pods/status
// when it changed.
func (w *podWorker) writeStatus(ctx context.Context, pod *corev1.Pod, final bool) {
	var statuses []corev1.ContainerStatus
	allReady, anyRunning, allStarted := true, false, true
	allDone, anyFailed := true, false
	for _, c := range w.containers {
		st := c.status(pod)
		statuses = append(statuses, st)
		allReady = allReady && st.Ready
		anyRunning = anyRunning || st.State.Running != nil
		c.mu.Lock()
		allStarted = allStarted && c.everStarted
		done := !c.running && c.terminated != nil && (final || !c.willRestart(pod))
		if done && c.terminated.ExitCode != 0 {
			anyFailed = true
		}
		allDone = allDone && done
		c.mu.Unlock()
	}
	phase := corev1.PodPending
	switch {
	case allDone && anyFailed:
		phase = corev1.PodFailed
	case allDone:
		phase = corev1.PodSucceeded
	case allStarted:
		phase = corev1.PodRunning
	}
	if final && phase == corev1.PodPending {
		phase = corev1.PodFailed
	}
	var inits []corev1.ContainerStatus
	for _, ic := range pod.Spec.InitContainers {
		// Init containers are not run by the test node; they count as done.
		inits = append(inits, corev1.ContainerStatus{
			Name: ic.Name, Image: ic.Image, ImageID: ic.Image, Ready: true,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				Reason: "Completed", Message: "init containers are not run by the serin test node",
				StartedAt: w.startTime, FinishedAt: w.startTime,
			}},
		})
	}
	ready := allReady && anyRunning && pod.DeletionTimestamp == nil
	cond := func(t corev1.PodConditionType, ok bool, reason string) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
			reason = ""
		}
		c := corev1.PodCondition{Type: t, Status: s, Reason: reason, LastTransitionTime: metav1.Now()}
		previous := w.lastConditions
		if previous == nil {
			previous = pod.Status.Conditions
		}
		for _, old := range previous {
			if old.Type == t && old.Status == s {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	conditions := []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, !final, ""),
		cond(corev1.PodInitialized, true, ""),
		cond(corev1.ContainersReady, ready, "ContainersNotReady"),
		cond(corev1.PodReady, ready, "ContainersNotReady"),
	}
	owned := map[corev1.PodConditionType]bool{}
	for _, c := range conditions {
		owned[c.Type] = true
	}
	for _, old := range pod.Status.Conditions {
		if !owned[old.Type] {
			conditions = append(conditions, old) // PodScheduled, DisruptionTarget, ...
		}
	}
	status := corev1.PodStatus{
		Phase:                 phase,
		Conditions:            conditions,
		HostIP:                w.n.ip.String(),
		HostIPs:               []corev1.HostIP{{IP: w.n.ip.String()}},
		PodIP:                 w.ip.String(),
		PodIPs:                []corev1.PodIP{{IP: w.ip.String()}},
		StartTime:             &w.startTime,
		ContainerStatuses:     statuses,
		InitContainerStatuses: inits,
		QOSClass:              pod.Status.QOSClass,
	}
	body, err := json.Marshal(map[string]any{"status": status})
	if err != nil {
		logf("%s: %v", w.name(), err)
		return
	}
	if string(body) == string(w.lastStatus) {
		return
	}
	_, err = w.n.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, body, metav1.PatchOptions{}, "status")
	if err != nil {
		if !apierrors.IsNotFound(err) && ctx.Err() == nil {
			logf("%s: writing status: %v", w.name(), err)
		}
		return
	}
	w.lastStatus = body
	w.lastConditions = conditions
}
