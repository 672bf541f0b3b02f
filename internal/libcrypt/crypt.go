//go:build cgo && linux

package libcrypt

/*
#cgo LDFLAGS: -lcrypt
#include <stdlib.h>
#include <string.h>
#include <crypt.h>

static char *fp_hash(const char *pw, const char *prefix, unsigned long count, char *out, int out_size) {
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	if (!crypt_gensalt_rn(prefix, count, NULL, 0, setting, sizeof setting))
		return NULL;
	struct crypt_data *d = calloc(1, sizeof *d);
	if (!d)
		return NULL;
	char *h = crypt_r(pw, setting, d);
	char *res = NULL;
	if (h && h[0] != '*' && (int)strlen(h) < out_size) {
		strcpy(out, h);
		res = out;
	}
	explicit_bzero(d, sizeof *d);
	free(d);
	return res;
}

static int fp_verify(const char *pw, const char *hash) {
	struct crypt_data *d = calloc(1, sizeof *d);
	if (!d)
		return -1;
	char *h = crypt_r(pw, hash, d);
	int ok = h && h[0] != '*' && strcmp(h, hash) == 0;
	explicit_bzero(d, sizeof *d);
	free(d);
	return ok;
}
*/
import "C"

import (
	"bytes"
	"errors"
	"unsafe"
)

// cPassword copies pw into C memory with a NUL terminator; free wipes it.
func cPassword(pw []byte) (*C.char, func(), error) {
	if bytes.IndexByte(pw, 0) >= 0 {
		return nil, nil, errors.New("libcrypt: a password may not contain a NUL byte")
	}
	n := C.size_t(len(pw) + 1)
	p := C.calloc(1, n)
	if p == nil {
		return nil, nil, errors.New("libcrypt: out of memory")
	}
	if len(pw) > 0 {
		C.memcpy(p, unsafe.Pointer(&pw[0]), C.size_t(len(pw)))
	}
	return (*C.char)(p), func() {
		C.explicit_bzero(p, n)
		C.free(p)
	}, nil
}

// Hash hashes pw with the method of a crypt(3) prefix ("$y$" yescrypt,
// "$6$" SHA-512, ...) and a fresh random salt; rounds 0 is the method's
// default cost. The C copies of the password are wiped; the caller wipes
// pw.
func Hash(pw []byte, prefix string, rounds int) (string, error) {
	cpw, free, err := cPassword(pw)
	if err != nil {
		return "", err
	}
	defer free()
	cp := C.CString(prefix)
	defer C.free(unsafe.Pointer(cp))
	var out [C.CRYPT_OUTPUT_SIZE]C.char
	if C.fp_hash(cpw, cp, C.ulong(rounds), &out[0], C.int(len(out))) == nil {
		return "", errors.New("libcrypt: cannot hash with method " + prefix)
	}
	return C.GoString(&out[0]), nil
}

// Verify reports whether hash is a hash of pw.
func Verify(pw []byte, hash string) (bool, error) {
	cpw, free, err := cPassword(pw)
	if err != nil {
		return false, err
	}
	defer free()
	ch := C.CString(hash)
	defer C.free(unsafe.Pointer(ch))
	switch C.fp_verify(cpw, ch) {
	case 1:
		return true, nil
	case 0:
		return false, nil
	}
	return false, errors.New("libcrypt: out of memory")
}
