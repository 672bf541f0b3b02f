package vmtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultCache is where built guest images are kept unless
// $FLEETPASS_VM_CACHE says otherwise. Not under /root or a home directory:
// QEMU runs as libvirt-qemu and must be able to read the images.
const DefaultCache = "/var/cache/fleetpass/vm"

const (
	buildScript  = "scripts/vm/build-image.sh"
	buildTimeout = 20 * time.Minute
)

// GuestImage is a built guest: the files a domain boots from. They are
// shared by every VM (each gets its own overlay) and must not be written.
type GuestImage struct {
	Dir    string // the cache entry holding the three files
	Kernel string
	Initrd string
	Rootfs string // raw ext4
}

var (
	imageMu  sync.Mutex
	image    *GuestImage
	imageErr error // a failed build is not retried by every later test
)

// Image returns the guest image, building it with scripts/vm/build-image.sh
// when the cache has none for the script's current contents. Concurrent
// test binaries wait for one build rather than each doing their own.
func Image(t testing.TB) *GuestImage {
	t.Helper()
	imageMu.Lock()
	defer imageMu.Unlock()
	if image != nil {
		return image
	}
	if imageErr != nil {
		t.Fatalf("vmtest: guest image: %v (failed earlier in this test binary)", imageErr)
	}
	root := RepoRoot(t)
	script := filepath.Join(root, buildScript)
	b, err := os.ReadFile(script)
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	sum := sha256.Sum256(b)
	cache := os.Getenv("FLEETPASS_VM_CACHE")
	if cache == "" {
		cache = DefaultCache
	}
	img, err := cachedImage(t, cache, hex.EncodeToString(sum[:8]), script)
	if err != nil {
		imageErr = err
		t.Fatalf("vmtest: guest image: %v", err)
	}
	image = img
	return img
}

func imageIn(dir string) *GuestImage {
	return &GuestImage{
		Dir:    dir,
		Kernel: filepath.Join(dir, "vmlinuz"),
		Initrd: filepath.Join(dir, "initrd.img"),
		Rootfs: filepath.Join(dir, "rootfs.img"),
	}
}

// cachedImage returns cache/key, building it first when it is missing. A
// build goes to a temporary directory renamed into place when complete, so
// a cache entry that exists is whole; the flock makes concurrent callers
// wait for the one build.
func cachedImage(t testing.TB, cache, key, script string) (*GuestImage, error) {
	start := time.Now()
	final := filepath.Join(cache, key)
	if _, err := os.Stat(final); err == nil {
		// The entry's mtime says when it was last used (see pruneCache).
		now := time.Now()
		os.Chtimes(final, now, now)
		t.Logf("vmtest: reusing guest image %s (%v)", final, time.Since(start).Round(time.Millisecond))
		return imageIn(final), nil
	}
	// 0755 all the way down: libvirt-qemu must traverse it.
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(cache, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	if _, err := os.Stat(final); err == nil {
		t.Logf("vmtest: guest image %s built by another process while this one waited %v",
			final, time.Since(start).Round(time.Millisecond))
		return imageIn(final), nil
	}

	pruneCache(cache)
	tmp := filepath.Join(cache, fmt.Sprintf(".tmp-%s-%d", key, os.Getpid()))
	t.Logf("vmtest: building the guest image with %s (one to two minutes)", script)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/bash", script, tmp)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	if err != nil {
		os.RemoveAll(tmp)
		// The output is only worth reading when something went wrong.
		t.Logf("vmtest: %s output:\n%s", script, out.Bytes())
		return nil, fmt.Errorf("%s: %w", script, err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, final); err != nil {
		return nil, err
	}
	t.Logf("vmtest: built guest image %s in %v", final, time.Since(start).Round(time.Second))
	return imageIn(final), nil
}

// pruneCache removes what the cache holds in vain; the caller holds the
// build lock. Entries of other versions of the build script are removed
// once unused for a week (a checkout of another branch may still want
// them); .tmp-* directories at once, since no build runs: they are left by
// a build that was killed (a test timeout), with a debootstrap tree of
// 300 MB.
func pruneCache(cache string) {
	ents, _ := os.ReadDir(cache)
	for _, e := range ents {
		dir := filepath.Join(cache, e.Name())
		if strings.HasPrefix(e.Name(), ".tmp-") {
			os.RemoveAll(dir)
			continue
		}
		info, err := e.Info()
		if err == nil && e.IsDir() && !strings.HasPrefix(e.Name(), ".") &&
			time.Since(info.ModTime()) > 7*24*time.Hour {
			os.RemoveAll(dir)
		}
	}
}

// RepoRoot returns the repository's root: the nearest directory above the
// test's working directory (its package directory) that holds go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		} else if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("vmtest: %v", err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("vmtest: no go.mod above the working directory")
		}
		dir = parent
	}
}

// BuildAgent builds ./cmd/fleetpass-agent as a static binary (CGO_ENABLED=0:
// the guest's libc is not the host's concern) into the test's temporary
// directory and returns its path. The go build cache makes calls after the
// first cheap.
func BuildAgent(t testing.TB) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("vmtest: the go command is needed to build fleetpass-agent: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "fleetpass-agent")
	start := time.Now()
	cmd := exec.Command(goTool, "build", "-trimpath", "-o", bin, "./cmd/fleetpass-agent")
	cmd.Dir = RepoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("vmtest: build fleetpass-agent: %v\n%s", err, out)
	}
	t.Logf("vmtest: built fleetpass-agent in %v", time.Since(start).Round(time.Millisecond))
	return bin
}

// GuestURL is the URL under which a guest reaches an https server that
// listens on the host's loopback interface at port: the user-mode network
// maps 10.0.2.2 to the host's 127.0.0.1.
func GuestURL(port int) string {
	return fmt.Sprintf("https://10.0.2.2:%d", port)
}
