package packcache

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// Key identifies one cacheable response: two requests with equal keys get
// byte-for-byte interchangeable responses from git (up to git's own
// run-to-run variation). Build it with KeyOf.
type Key struct {
	Repo           string
	Generation     uint64
	Version        int
	Wants          []string // sorted, unique
	WantRefs       []string // sorted, unique
	Shallows       []string // sorted, unique
	Depth          int
	DeepenSince    int64
	DeepenNot      []string // sorted, unique
	DeepenRelative bool
	Filter         string   // normalised
	Features       []string // response-changing capabilities, sorted, unique

	// Command is "ls-refs" for a v2 ls-refs request, "" for a fetch
	// (every v0/v1 request). An ls-refs key has no wants, shallows,
	// deepen or filter; its Features hold only the object format.
	Command string
	// The ls-refs arguments: the flags, and the prefixes sorted and
	// unique (git lists the refs matching any of them, in ref order,
	// whatever the order they came in).
	Symrefs, Peel, Unborn bool
	RefPrefixes           []string
}

// keyFeatures are the capabilities and flags that change the response.
// The others a client may send (multi_ack, no-done, filter, shallow, ...)
// only enable request lines or matter during negotiation, which the cache
// never serves.
var keyFeatures = map[string]bool{
	"ofs-delta": true, "include-tag": true, "thin-pack": true,
	"side-band": true, "side-band-64k": true, "no-progress": true,
}

// KeyOf returns the key of a cacheable request (r.Bypass() == nil) for a
// repository at a generation. Agent and session-id are left out, and the
// object format defaults to sha1 as git's does.
func KeyOf(repo string, gen uint64, r *Request) (Key, error) {
	if r.Command == "ls-refs" {
		return lsRefsKey(repo, gen, r), nil
	}
	filter, err := normalizeFilter(r.Filter)
	if err != nil {
		return Key{}, err
	}
	k := Key{
		Repo: repo, Generation: gen, Version: r.Version,
		Wants: sortedUnique(r.Wants), WantRefs: sortedUnique(r.WantRefs),
		Shallows: sortedUnique(r.Shallows), Depth: r.Depth,
		DeepenSince: r.DeepenSince, DeepenNot: sortedUnique(r.DeepenNot),
		DeepenRelative: r.DeepenRelative, Filter: filter,
	}
	for _, f := range r.Features {
		if keyFeatures[f] {
			k.Features = append(k.Features, f)
		}
	}
	k.Features = sortedUnique(append(k.Features, objectFormat(r)))
	return k, nil
}

// lsRefsKey is KeyOf for ls-refs: the repository and generation, the
// flags, the sorted unique prefixes and the object format.
func lsRefsKey(repo string, gen uint64, r *Request) Key {
	return Key{Repo: repo, Generation: gen, Version: r.Version, Command: r.Command,
		Symrefs: r.Symrefs, Peel: r.Peel, Unborn: r.Unborn,
		RefPrefixes: sortedUnique(r.RefPrefixes), Features: []string{objectFormat(r)}}
}

// objectFormat returns the request's object-format capability, sha1 when
// it sent none (as git assumes).
func objectFormat(r *Request) string {
	format := "object-format=sha1"
	for _, f := range r.Features {
		if strings.HasPrefix(f, "object-format=") {
			format = f
		}
	}
	return format
}

func sortedUnique(s []string) []string {
	return slices.Compact(slices.Sorted(slices.Values(s)))
}

// String is the key's canonical text: equal keys, equal strings.
func (k Key) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "repo %q\ngen %d\nversion %d\n", k.Repo, k.Generation, k.Version)
	list := func(name string, s []string) {
		for _, v := range s {
			fmt.Fprintf(&b, "%s %q\n", name, v)
		}
	}
	if k.Command != "" { // a fetch key never has this line
		fmt.Fprintf(&b, "command %q\nsymrefs %t\npeel %t\nunborn %t\n", k.Command, k.Symrefs, k.Peel, k.Unborn)
		list("ref-prefix", k.RefPrefixes)
		list("feature", k.Features)
		return b.String()
	}
	list("want", k.Wants)
	list("want-ref", k.WantRefs)
	list("shallow", k.Shallows)
	fmt.Fprintf(&b, "deepen %d\ndeepen-since %d\ndeepen-relative %t\n", k.Depth, k.DeepenSince, k.DeepenRelative)
	list("deepen-not", k.DeepenNot)
	fmt.Fprintf(&b, "filter %q\n", k.Filter)
	list("feature", k.Features)
	return b.String()
}

// ID is the SHA-256 of String in hexadecimal, used as the file name.
func (k Key) ID() string {
	sum := sha256.Sum256([]byte(k.String()))
	return hex.EncodeToString(sum[:])
}

// normalizeFilter returns a canonical form of a filter spec, so that
// "blob:limit=1k" and "blob:limit=1024" share an entry. Specs the cache
// does not know (sparse:oid, future ones) return an error wrapping
// ErrBypass.
func normalizeFilter(spec string) (string, error) {
	if spec == "" {
		return "", nil
	}
	if rest, ok := strings.CutPrefix(spec, "combine:"); ok {
		return normalizeCombine(rest)
	}
	kind, val, _ := strings.Cut(spec, ":")
	switch {
	case spec == "blob:none":
		return spec, nil
	case kind == "blob" && strings.HasPrefix(val, "limit="):
		n, err := parseSize(val[len("limit="):])
		return "blob:limit=" + strconv.FormatUint(n, 10), err
	case kind == "tree":
		n, err := strconv.ParseUint(val, 10, 64)
		return "tree:" + strconv.FormatUint(n, 10), filterErr(spec, err)
	case kind == "object" && slices.Contains([]string{"type=blob", "type=tree", "type=commit", "type=tag"}, val):
		return spec, nil
	}
	return "", fmt.Errorf("%w: filter %q not understood", ErrBypass, clip(spec))
}

// normalizeCombine normalises each sub-filter of combine:<a>+<b>...; the
// order does not change the objects sent, so the parts are sorted.
func normalizeCombine(rest string) (string, error) {
	var parts []string
	for _, p := range strings.Split(rest, "+") {
		sub, err := url.PathUnescape(p)
		if err != nil || sub == "" || strings.HasPrefix(sub, "combine:") {
			return "", fmt.Errorf("%w: filter combine:%q not understood", ErrBypass, clip(rest))
		}
		n, err := normalizeFilter(sub)
		if err != nil {
			return "", err
		}
		parts = append(parts, n)
	}
	slices.Sort(parts)
	return "combine:" + strings.Join(parts, "+"), nil
}

// parseSize parses git's unsigned sizes with an optional k, m or g suffix.
func parseSize(s string) (uint64, error) {
	mult := uint64(1)
	if s != "" {
		switch s[len(s)-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		}
		if mult > 1 {
			s = s[:len(s)-1]
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > ^uint64(0)/mult {
		return 0, filterErr("blob:limit="+s, fmt.Errorf("bad size"))
	}
	return n * mult, nil
}

func filterErr(spec string, err error) error {
	if err != nil {
		return fmt.Errorf("%w: filter %q not understood", ErrBypass, clip(spec))
	}
	return nil
}
