package migrate

// hashint8extended is PostgreSQL's function of that name: its 64-bit hash of
// an int8, seeded, which the fast path's query sums over the checksum table
// (the checksum hashed with its version as the seed). It is Bob Jenkins'
// lookup3 on the int8 folded to 32 bits, as src/common/hashfn.c has it
// (hash_bytes_uint32_extended) and hashint8extended in
// src/backend/access/hash/hashfunc.c calls it; hash partitioning stores its
// results, so it cannot change between versions. TestDigest_ServerAndCodeAgree
// checks it against the server.
func hashint8extended(val, seed int64) int64 {
	lo, hi := uint32(val), uint32(val>>32)
	if val >= 0 {
		lo ^= hi
	} else {
		lo ^= ^hi
	}
	a := uint32(0x9e3779b9) + 4 + 3923095 // 4: sizeof(uint32)
	b, c := a, a
	if seed != 0 {
		a += uint32(uint64(seed) >> 32)
		b += uint32(seed)
		a, b, c = mix(a, b, c)
	}
	a += lo
	b, c = final(a, b, c)
	return int64(uint64(b)<<32 | uint64(c))
}

func rot(x uint32, k uint) uint32 { return x<<k | x>>(32-k) }

// mix is lookup3's mix of three 32-bit values.
func mix(a, b, c uint32) (uint32, uint32, uint32) {
	a -= c
	a ^= rot(c, 4)
	c += b
	b -= a
	b ^= rot(a, 6)
	a += c
	c -= b
	c ^= rot(b, 8)
	b += a
	a -= c
	a ^= rot(c, 16)
	c += b
	b -= a
	b ^= rot(a, 19)
	a += c
	c -= b
	c ^= rot(b, 4)
	b += a
	return a, b, c
}

// final is lookup3's final mix; b and c are the hash.
func final(a, b, c uint32) (uint32, uint32) {
	c ^= b
	c -= rot(b, 14)
	a ^= c
	a -= rot(c, 11)
	b ^= a
	b -= rot(a, 25)
	c ^= b
	c -= rot(b, 16)
	a ^= c
	a -= rot(c, 4)
	b ^= a
	b -= rot(a, 14)
	c ^= b
	c -= rot(b, 24)
	return b, c
}
