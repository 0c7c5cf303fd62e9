// podbench times CRI pod and container lifecycles against one runtime,
// talking gRPC directly over its unix socket (crictl's process start-up would
// otherwise dominate the figures). It prints one JSON object per line:
//
//	{"bench":"pod","iter":0,"op":"RunPodSandbox","ms":12.345}
//	{"bench":"container","iter":-1,"op":"PullImage","error":"...","code":"Unimplemented"}
//	{"bench":"mem","op":"monitor_rss_per_container","kib":1234,"procs":10,"containers":10}
//
// Modes:
//
//	pod        N x RunPodSandbox -> StopPodSandbox -> RemovePodSandbox
//	container  pull the image once, then N x RunPodSandbox -> CreateContainer
//	           -> StartContainer -> StopContainer -> RemoveContainer
//	           -> StopPodSandbox -> RemovePodSandbox
//	mem        start K pods with one container each, then sum the VmRSS of the
//	           per-container helper processes (-proc-name) that appeared
//
// On SIGINT or SIGTERM it stops and removes the pods it created, then dies
// of the same signal.
//
// A step that fails ends the benchmark (what was created is removed, best
// effort); the error is reported as a JSON line with its gRPC code, so the
// caller can tell "RPC unimplemented" from a real failure. The exit status is
// 0 whenever results could be written, 1 when the runtime is unreachable.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

var (
	endpoint    = flag.String("endpoint", "", "CRI socket, unix:///path or /path")
	mode        = flag.String("mode", "pod", "pod, container or mem")
	iterations  = flag.Int("n", 20, "timed iterations")
	warmup      = flag.Int("warmup", 1, "untimed iterations run first")
	image       = flag.String("image", "registry.k8s.io/e2e-test-images/busybox:1.29-2", "container image")
	handler     = flag.String("runtime-handler", "", "RuntimeClass handler")
	logDir      = flag.String("log-dir", "", "parent of the pods' log directories (empty: no container logs)")
	stopTimeout = flag.Int64("stop-timeout", 0, "StopContainer timeout in seconds (sleep as PID 1 ignores SIGTERM, so 0 = SIGKILL at once)")
	k           = flag.Int("k", 10, "mem mode: containers to start")
	procName    = flag.String("proc-name", "", "mem mode: executable name of the per-container helper (krio-monitor, containerd-shim-runc-v2)")
	procMatch   = flag.String("proc-match", "", "mem mode: only count helpers whose command line contains this")
	daemonPID   = flag.Int("daemon-pid", 0, "mem mode: also report this daemon's VmRSS")
	rpcTimeout  = flag.Duration("rpc-timeout", 2*time.Minute, "deadline of each RPC")
)

var (
	rc    runtimeapi.RuntimeServiceClient
	ic    runtimeapi.ImageServiceClient
	out   = json.NewEncoder(os.Stdout)
	runID = randHex(4)
)

type record struct {
	Bench      string   `json:"bench"`
	Iter       *int     `json:"iter,omitempty"`
	Op         string   `json:"op"`
	Ms         *float64 `json:"ms,omitempty"`
	KiB        *int64   `json:"kib,omitempty"`
	Procs      *int     `json:"procs,omitempty"`
	Containers *int     `json:"containers,omitempty"`
	Error      string   `json:"error,omitempty"`
	Code       string   `json:"code,omitempty"`
}

// stopping is set by the signal handler: results after it are not printed.
var stopping atomic.Bool

func emit(r record) {
	if stopping.Load() {
		return
	}
	if err := out.Encode(r); err != nil {
		fmt.Fprintln(os.Stderr, "podbench:", err)
		os.Exit(1)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// stepError is a failed RPC, with the operation it belongs to.
type stepError struct {
	op  string
	err error
}

func (e *stepError) Error() string { return e.op + ": " + e.err.Error() }

// timed runs one RPC under its own deadline and returns its duration.
func timed(op string, f func(ctx context.Context) error) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), *rpcTimeout)
	defer cancel()
	start := time.Now()
	err := f(ctx)
	d := time.Since(start)
	if err != nil {
		return 0, &stepError{op, err}
	}
	return float64(d.Nanoseconds()) / 1e6, nil
}

func reportError(bench string, iter int, err error) {
	r := record{Bench: bench, Iter: &iter, Error: err.Error()}
	if se, ok := err.(*stepError); ok {
		r.Op = se.op
		r.Code = status.Code(se.err).String()
	}
	emit(r)
}

func podConfig(i int) *runtimeapi.PodSandboxConfig {
	name := fmt.Sprintf("bench-%s-%d", runID, i)
	uid := randHex(16)
	ns := "krio-bench"
	c := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Uid: uid, Namespace: ns},
		Labels:   map[string]string{"krio-bench": runID},
		Linux:    &runtimeapi.LinuxPodSandboxConfig{},
	}
	if *logDir != "" {
		c.LogDirectory = filepath.Join(*logDir, ns+"_"+name+"_"+uid)
	}
	return c
}

func containerConfig() *runtimeapi.ContainerConfig {
	c := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "sleep"},
		Image:    &runtimeapi.ImageSpec{Image: *image},
		Command:  []string{"sleep", "3600"},
		Linux:    &runtimeapi.LinuxContainerConfig{},
	}
	if *logDir != "" {
		c.LogPath = "sleep/0.log"
	}
	return c
}

// live holds the pods created and not removed yet, for the signal handler.
var live = struct {
	sync.Mutex
	pods map[string]bool
}{pods: map[string]bool{}}

func track(id string, alive bool) {
	live.Lock()
	defer live.Unlock()
	if alive {
		live.pods[id] = true
	} else {
		delete(live.pods, id)
	}
}

// cleanupPod stops and removes a pod (and so its containers), ignoring errors.
func cleanupPod(id string) {
	if id == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, _ = rc.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
	if _, err := rc.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err == nil {
		track(id, false)
	}
}

// handleSignals removes the live pods on SIGINT/SIGTERM, then re-raises the
// signal so the calling shell sees the interruption.
func handleSignals() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-ch
		stopping.Store(true)
		live.Lock()
		ids := make([]string, 0, len(live.pods))
		for id := range live.pods {
			ids = append(ids, id)
		}
		live.Unlock()
		for _, id := range ids {
			cleanupPod(id)
		}
		signal.Reset(sig)
		_ = syscall.Kill(os.Getpid(), sig.(syscall.Signal))
		time.Sleep(time.Second)
		os.Exit(130)
	}()
}

type phase struct {
	op string
	ms float64
}

// podCycle runs RunPodSandbox -> Stop -> Remove.
func podCycle(i int) ([]phase, error) {
	var phases []phase
	var id string
	cfg := podConfig(i)
	ms, err := timed("RunPodSandbox", func(ctx context.Context) error {
		r, err := rc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: *handler})
		if err == nil {
			id = r.PodSandboxId
			track(id, true)
		}
		return err
	})
	if err != nil {
		return phases, err
	}
	phases = append(phases, phase{"RunPodSandbox", ms})
	ms, err = timed("StopPodSandbox", func(ctx context.Context) error {
		_, err := rc.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
		return err
	})
	if err != nil {
		cleanupPod(id)
		return phases, err
	}
	phases = append(phases, phase{"StopPodSandbox", ms})
	ms, err = timed("RemovePodSandbox", func(ctx context.Context) error {
		_, err := rc.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
		if err == nil {
			track(id, false)
		}
		return err
	})
	if err != nil {
		cleanupPod(id)
		return phases, err
	}
	phases = append(phases, phase{"RemovePodSandbox", ms})
	return phases, nil
}

// startPodWithContainer runs a pod and starts one sleep container in it.
func startPodWithContainer(i int, phases *[]phase) (podID, ctrID string, err error) {
	cfg := podConfig(i)
	add := func(op string, ms float64) { *phases = append(*phases, phase{op, ms}) }
	ms, err := timed("RunPodSandbox", func(ctx context.Context) error {
		r, err := rc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: *handler})
		if err == nil {
			podID = r.PodSandboxId
			track(podID, true)
		}
		return err
	})
	if err != nil {
		return "", "", err
	}
	add("RunPodSandbox", ms)
	ms, err = timed("CreateContainer", func(ctx context.Context) error {
		r, err := rc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
			PodSandboxId: podID, Config: containerConfig(), SandboxConfig: cfg})
		if err == nil {
			ctrID = r.ContainerId
		}
		return err
	})
	if err != nil {
		return podID, "", err
	}
	add("CreateContainer", ms)
	ms, err = timed("StartContainer", func(ctx context.Context) error {
		_, err := rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctrID})
		return err
	})
	if err != nil {
		return podID, ctrID, err
	}
	add("StartContainer", ms)
	return podID, ctrID, nil
}

// containerCycle runs the whole pod + container lifecycle.
func containerCycle(i int) ([]phase, error) {
	var phases []phase
	podID, ctrID, err := startPodWithContainer(i, &phases)
	if err != nil {
		cleanupPod(podID)
		return phases, err
	}
	steps := []struct {
		op string
		f  func(ctx context.Context) error
	}{
		{"StopContainer", func(ctx context.Context) error {
			_, err := rc.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ctrID, Timeout: *stopTimeout})
			return err
		}},
		{"RemoveContainer", func(ctx context.Context) error {
			_, err := rc.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: ctrID})
			return err
		}},
		{"StopPodSandbox", func(ctx context.Context) error {
			_, err := rc.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID})
			return err
		}},
		{"RemovePodSandbox", func(ctx context.Context) error {
			_, err := rc.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID})
			if err == nil {
				track(podID, false)
			}
			return err
		}},
	}
	for _, s := range steps {
		ms, err := timed(s.op, s.f)
		if err != nil {
			cleanupPod(podID)
			return phases, err
		}
		phases = append(phases, phase{s.op, ms})
	}
	return phases, nil
}

// pullOnce pulls the image unless the runtime already has it.
func pullOnce(bench string) error {
	var present bool
	_, err := timed("ImageStatus", func(ctx context.Context) error {
		r, err := ic.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: *image}})
		if err == nil && r.Image != nil {
			present = true
		}
		return err
	})
	if err != nil {
		reportError(bench, -1, err)
		return err
	}
	if present {
		return nil
	}
	ms, err := timed("PullImage", func(ctx context.Context) error {
		_, err := ic.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: *image}})
		return err
	})
	if err != nil {
		reportError(bench, -1, err)
		return err
	}
	it := -1
	emit(record{Bench: bench, Iter: &it, Op: "PullImage (once)", Ms: &ms})
	return nil
}

func runLoop(bench string, cycle func(int) ([]phase, error)) {
	for i := 0; i < *warmup+*iterations; i++ {
		phases, err := cycle(i)
		iter := i - *warmup
		if err != nil {
			reportError(bench, iter, err)
			return
		}
		if iter < 0 {
			continue
		}
		for _, p := range phases {
			ms := p.ms
			emit(record{Bench: bench, Iter: &iter, Op: p.op, Ms: &ms})
		}
	}
}

// --- mem mode ---------------------------------------------------------------

// helperPIDs lists the processes whose executable (or argv[0]) is named name
// and whose command line contains match.
func helperPIDs(name, match string) map[int]bool {
	pids := map[int]bool{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		exe = strings.TrimSuffix(exe, " (deleted)")
		if filepath.Base(exe) != name && filepath.Base(args[0]) != name {
			continue
		}
		if match != "" && !strings.Contains(strings.Join(args, " "), match) {
			continue
		}
		pids[pid] = true
	}
	return pids
}

// vmRSS returns a process's VmRSS in KiB (0 if it is gone).
func vmRSS(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				return v
			}
		}
	}
	return 0
}

func memBench() {
	const bench = "mem"
	if err := pullOnce(bench); err != nil {
		return
	}
	before := helperPIDs(*procName, *procMatch)
	var pods []string
	defer func() {
		for _, id := range pods {
			cleanupPod(id)
		}
	}()
	for i := 0; i < *k; i++ {
		var phases []phase
		podID, _, err := startPodWithContainer(1000+i, &phases)
		if podID != "" {
			pods = append(pods, podID)
		}
		if err != nil {
			reportError(bench, i, err)
			return
		}
	}
	time.Sleep(2 * time.Second) // let helpers finish start-up work
	var sum int64
	n := 0
	for pid := range helperPIDs(*procName, *procMatch) {
		if before[pid] {
			continue
		}
		sum += vmRSS(pid)
		n++
	}
	containers := *k
	procs := n
	if n > 0 {
		per := sum / int64(containers)
		emit(record{Bench: bench, Op: "helper_rss_total", KiB: &sum, Procs: &procs, Containers: &containers})
		emit(record{Bench: bench, Op: "helper_rss_per_container", KiB: &per, Procs: &procs, Containers: &containers})
	} else {
		emit(record{Bench: bench, Op: "helper_rss_per_container", Procs: &procs, Containers: &containers,
			Error: "no " + *procName + " process found"})
	}
	if *daemonPID > 0 {
		rss := vmRSS(*daemonPID)
		emit(record{Bench: bench, Op: "daemon_rss", KiB: &rss, Containers: &containers})
	}
}

func main() {
	flag.Parse()
	if *endpoint == "" {
		fmt.Fprintln(os.Stderr, "podbench: -endpoint is required")
		os.Exit(2)
	}
	target := *endpoint
	if !strings.HasPrefix(target, "unix://") {
		target = "unix://" + target
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "podbench:", err)
		os.Exit(1)
	}
	defer conn.Close()
	rc = runtimeapi.NewRuntimeServiceClient(conn)
	ic = runtimeapi.NewImageServiceClient(conn)
	handleSignals()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err = rc.Version(ctx, &runtimeapi.VersionRequest{}, grpc.WaitForReady(true))
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "podbench: Version:", err)
		os.Exit(1)
	}

	switch *mode {
	case "pod":
		runLoop("pod", podCycle)
	case "container":
		if pullOnce("container") == nil {
			runLoop("container", containerCycle)
		}
	case "mem":
		memBench()
	default:
		fmt.Fprintln(os.Stderr, "podbench: unknown -mode", *mode)
		os.Exit(2)
	}
}
