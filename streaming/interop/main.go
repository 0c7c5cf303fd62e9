// Command interop drives krio-streaming's echo_server example with client-go.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/client-go/util/exec"
)

type sizeQueue struct{ sent bool }

func (q *sizeQueue) Next() *remotecommand.TerminalSize {
	if q.sent {
		time.Sleep(time.Hour)
		return nil
	}
	q.sent = true
	return &remotecommand.TerminalSize{Width: 77, Height: 22}
}

func main() {
	sc := bufio.NewScanner(os.Stdin)
	paths := map[string][]string{}
	addr := ""
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if f[0] == "addr" {
			addr = f[1]
			continue
		}
		paths[f[0]] = append(paths[f[0]], f[1])
	}
	cfg := &rest.Config{Host: "http://" + addr}
	take := func(kind string) *url.URL {
		p := paths[kind][0]
		paths[kind] = paths[kind][1:]
		u, _ := url.Parse("http://" + addr + p)
		return u
	}
	fail := 0
	check := func(name string, ok bool, detail string) {
		if ok {
			fmt.Printf("PASS %s\n", name)
		} else {
			fail++
			fmt.Printf("FAIL %s: %s\n", name, detail)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Exec: SPDY, then WebSocket.
	for _, kind := range []string{"spdy", "websocket"} {
		var ex remotecommand.Executor
		var err error
		if kind == "spdy" {
			ex, err = remotecommand.NewSPDYExecutor(cfg, "POST", take("exec"))
		} else {
			ex, err = remotecommand.NewWebSocketExecutor(cfg, "GET", take("exec").String())
		}
		if err != nil {
			panic(err)
		}
		var stdout, stderr bytes.Buffer
		big := strings.Repeat("0123456789abcdef", 20000) // 320 KB: beyond every window
		err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: strings.NewReader(big), Stdout: &stdout, Stderr: &stderr})
		var ce exec.CodeExitError
		okCode := errors.As(err, &ce) && ce.Code == 42
		check(kind+" exec exit code 42", okCode, fmt.Sprintf("err=%v", err))
		check(kind+" exec stdout echo", stdout.String() == big, fmt.Sprintf("got %d bytes", stdout.Len()))
		check(kind+" exec stderr", stderr.String() == "stderr", stderr.String())

		// TTY with resize.
		if kind == "spdy" {
			ex, err = remotecommand.NewSPDYExecutor(cfg, "POST", take("tty"))
		} else {
			ex, err = remotecommand.NewWebSocketExecutor(cfg, "GET", take("tty").String())
		}
		if err != nil {
			panic(err)
		}
		stdout.Reset()
		err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: strings.NewReader("tty-in"), Stdout: &stdout, Tty: true, TerminalSizeQueue: &sizeQueue{}})
		check(kind+" tty exec", err == nil && stdout.String() == "77x22;tty-in", fmt.Sprintf("err=%v out=%q", err, stdout.String()))
	}

	// Port-forward: SPDY, then SPDY tunnelled in WebSocket.
	for _, kind := range []string{"spdy", "tunnel"} {
		u := take("portforward")
		var dialer httpstream.Dialer
		if kind == "spdy" {
			tr, up, err := spdy.RoundTripperFor(cfg)
			if err != nil {
				panic(err)
			}
			dialer = spdy.NewDialer(up, &http.Client{Transport: tr}, "POST", u)
		} else {
			d, err := portforward.NewSPDYOverWebsocketDialer(u, cfg)
			if err != nil {
				panic(err)
			}
			dialer = d
		}
		stop := make(chan struct{})
		ready := make(chan struct{})
		pf, err := portforward.New(dialer, []string{"0:8080"}, stop, ready, io.Discard, os.Stderr)
		if err != nil {
			panic(err)
		}
		go func() {
			if err := pf.ForwardPorts(); err != nil {
				fmt.Println("forward:", err)
			}
		}()
		select {
		case <-ready:
		case <-time.After(10 * time.Second):
			check(kind+" port-forward ready", false, "timeout")
			continue
		}
		ports, _ := pf.GetPorts()
		for i := 0; i < 2; i++ {
			c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ports[0].Local))
			if err != nil {
				panic(err)
			}
			msg := fmt.Sprintf("hello %d", i)
			c.Write([]byte(msg))
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, _ := io.ReadAll(c)
			c.Close()
			check(fmt.Sprintf("%s port-forward conn %d", kind, i), string(got) == "port 8080: "+msg, fmt.Sprintf("%q", got))
		}
		close(stop)
	}
	fmt.Printf("%d failed\n", fail)
	if fail > 0 {
		os.Exit(1)
	}
}
