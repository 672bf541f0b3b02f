package sdktest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/bm/v20180423"
	"github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common"
	sdkerrors "github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common/errors"
	"github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/common/profile"
)

// server is a real `fleetpass serve --demo` on a loopback port.
type server struct {
	addr    string
	dataDir string
	keyID   string
	secret  string
	log     *syncBuffer
	stop    func()
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fleetpassBinary builds cmd/fleetpass of the enclosing module once, or
// takes $FLEETPASS_BIN.
func fleetpassBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("FLEETPASS_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "fleetpass")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/fleetpass")
	cmd.Dir = filepath.Join("..", "..", "..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building fleetpass: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startServer(t *testing.T) *server {
	t.Helper()
	bin := fleetpassBinary(t)
	s := &server{dataDir: t.TempDir(), log: &syncBuffer{}}
	for attempt := 0; ; attempt++ {
		s.addr = freeAddr(t)
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, bin, "serve", "--demo", "--listen", s.addr, "--data-dir", s.dataDir,
			"--sim-boot-time", "200ms", "--sim-shutdown-time", "200ms", "--log-level", "debug")
		cmd.Stdout, cmd.Stderr = s.log, s.log
		cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
		cmd.WaitDelay = 10 * time.Second
		if err := cmd.Start(); err != nil {
			cancel()
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		var once sync.Once
		s.stop = func() {
			once.Do(func() {
				cancel()
				<-exited
			})
		}
		if s.waitReady(exited) {
			break
		}
		s.stop()
		// Another process may have taken the port between the probe and
		// the server's listen: try another, a few times.
		if attempt == 3 {
			t.Fatalf("fleetpass did not start:\n%s", s.log)
		}
	}
	t.Cleanup(s.stop)
	var creds struct {
		KeyID  string `json:"keyId"`
		Secret string `json:"secret"`
	}
	data, err := os.ReadFile(filepath.Join(s.dataDir, "admin-credentials"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &creds); err != nil {
		t.Fatal(err)
	}
	s.keyID, s.secret = creds.KeyID, creds.Secret
	return s
}

// waitReady polls /readyz until the server answers, or it exits.
func (s *server) waitReady(exited chan error) bool {
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			return false
		default:
		}
		resp, err := http.Get("http://" + s.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

func (s *server) client(t *testing.T, secretID, secret string) *v20180423.Client {
	t.Helper()
	cpf := profile.NewClientProfile()
	cpf.HttpProfile.Endpoint = s.addr
	cpf.HttpProfile.Scheme = "HTTP"
	c, err := v20180423.NewClient(common.NewCredential(secretID, secret), "ap-guangzhou", cpf)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func code(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var se *sdkerrors.TencentCloudSDKError
	if !errors.As(err, &se) || strings.HasPrefix(se.Code, "ClientError.") {
		t.Fatalf("the SDK could not read the answer: %v", err)
	}
	if se.RequestId == "" {
		t.Errorf("no RequestId: %v", err)
	}
	return se.Code
}

// devices lists the demo fleet by alias.
func devices(t *testing.T, c *v20180423.Client) map[string]*v20180423.DeviceInfo {
	t.Helper()
	out := map[string]*v20180423.DeviceInfo{}
	var total uint64
	for offset := uint64(0); ; offset += 10 {
		req := v20180423.NewDescribeDevicesRequest()
		req.Offset, req.Limit = common.Uint64Ptr(offset), common.Uint64Ptr(10)
		resp, err := c.DescribeDevices(req)
		if err != nil {
			t.Fatal(err)
		}
		total = *resp.Response.TotalCount
		for _, d := range resp.Response.DeviceInfoSet {
			out[*d.Alias] = d
		}
		if len(resp.Response.DeviceInfoSet) < 10 {
			break
		}
	}
	if uint64(len(out)) != total {
		t.Fatalf("paged %d devices, TotalCount %d", len(out), total)
	}
	return out
}

func TestBareMetalSDK(t *testing.T) {
	s := startServer(t)
	c := s.client(t, s.keyID, s.secret)
	devs := devices(t, c)
	web, db, dead, stopped := devs["web-01"], devs["db-01"], devs["legacy-agent-dead"], devs["cache-01"]
	if web == nil || db == nil || dead == nil || stopped == nil {
		t.Fatalf("the demo fleet lacks a device: %d devices", len(devs))
	}
	if *web.DeviceStatus != 4 || *web.OperateStatus != 1 || *stopped.OperateStatus != 3 {
		t.Errorf("statuses: running %d/%d, stopped %d/%d", *web.DeviceStatus, *web.OperateStatus, *stopped.DeviceStatus, *stopped.OperateStatus)
	}

	const pw = "Metal9sdk!"
	reset := v20180423.NewResetDevicePasswordRequest()
	reset.InstanceIds, reset.Password = common.StringPtrs([]string{*web.InstanceId, *db.InstanceId}), common.StringPtr(pw)
	resp, err := c.ResetDevicePassword(reset)
	if err != nil {
		t.Fatal(err)
	}
	task := *resp.Response.TaskId
	if task == 0 {
		t.Fatal("TaskId 0")
	}
	var result *v20180423.DescribeOperationResultResponse
	deadline := time.Now().Add(60 * time.Second)
	for {
		req := v20180423.NewDescribeOperationResultRequest()
		req.TaskId = common.Uint64Ptr(task)
		if result, err = c.DescribeOperationResult(req); err != nil {
			t.Fatal(err)
		}
		if st := *result.Response.TaskStatus; st != 4 && st != 5 && st != 6 && st != 7 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %d did not end", task)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if *result.Response.TaskStatus != 1 || len(result.Response.SubtaskStatusSet) != 2 {
		t.Fatalf("task %d: status %d, %d subtasks", task, *result.Response.TaskStatus, len(result.Response.SubtaskStatusSet))
	}
	for _, sub := range result.Response.SubtaskStatusSet {
		if *sub.TaskStatus != 1 {
			t.Errorf("%s: status %d", *sub.InstanceId, *sub.TaskStatus)
		}
	}

	for _, tc := range []struct {
		name string
		ids  []string
		pw   string
		want string
	}{
		{"the agent is not alive", []string{*dead.InstanceId}, pw, "FailedOperation.TscAgentOffline"},
		{"a stopped device", []string{*stopped.InstanceId}, pw, "UnsupportedOperation.InvalidOperation"},
		{"a password breaking the product's rule", []string{*web.InstanceId}, "short", "InvalidParameter"},
		{"an unknown device", []string{"ins-0000abcd"}, pw, "ResourceNotFound"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := v20180423.NewResetDevicePasswordRequest()
			req.InstanceIds, req.Password = common.StringPtrs(tc.ids), common.StringPtr(tc.pw)
			if _, err := c.ResetDevicePassword(req); code(t, err) != tc.want {
				t.Errorf("got %v, want %s", err, tc.want)
			}
		})
	}
	req := v20180423.NewDescribeOperationResultRequest()
	req.TaskId = common.Uint64Ptr(task + 1000)
	if _, err := c.DescribeOperationResult(req); code(t, err) != "ResourceNotFound" {
		t.Errorf("an unknown task: %v", err)
	}
	if _, err := s.client(t, s.keyID, s.secret+"x").DescribeDevices(v20180423.NewDescribeDevicesRequest()); code(t, err) != "AuthFailure.SignatureFailure" {
		t.Errorf("a wrong secret: %v", err)
	}
	if _, err := s.client(t, "AKIDunknown", s.secret).DescribeDevices(v20180423.NewDescribeDevicesRequest()); code(t, err) != "AuthFailure.SecretIdNotFound" {
		t.Errorf("an unknown SecretId: %v", err)
	}

	// The password is nowhere: not in the server's output, not in any
	// file of its data directory (looked at once the server has stopped).
	s.stop()
	if strings.Contains(s.log.String(), pw) {
		t.Error("the password appears in the server's log")
	}
	filepath.WalkDir(s.dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if bytes.Contains(data, []byte(pw)) {
			t.Errorf("the password appears in %s", filepath.Base(path))
		}
		return nil
	})
}
