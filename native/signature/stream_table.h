/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Bounded table of per-stream state: open addressing (linear probing,
 * backward-shift deletion) over slot indices, slots recycled through a
 * free list, and an intrusive LRU list for eviction and idle expiry.
 * Slot storage grows up to max_streams and is then reused: no allocation
 * per event once every slot has been used once.
 */
#ifndef ALT_SIGNATURE_STREAM_TABLE_H
#define ALT_SIGNATURE_STREAM_TABLE_H

#include <cstdint>
#include <cstring>
#include <vector>

#include "xxh64.h"

namespace alt {

/* Flow + observation point. Padding zeroed so memcmp and hashing are exact. */
struct StreamKey {
	uint8_t saddr[16];
	uint8_t daddr[16];
	uint16_t sport;
	uint16_t dport;
	uint32_t ifindex;
	uint8_t direction;
	uint8_t family;
	uint8_t protocol;
	uint8_t _pad[5];
};
static_assert(sizeof(StreamKey) == 48, "StreamKey must have no implicit padding");

constexpr uint32_t kNoSlot = UINT32_MAX;

/* T: per-stream payload; must be default-constructible and have reset(). */
template <typename T> class StreamTable {
public:
	struct Slot {
		StreamKey key;
		uint64_t hash;
		uint64_t last_ns;
		uint32_t prev, next; /* LRU: prev toward most recent */
		T value;
	};

	explicit StreamTable(uint32_t max_streams) : max_(max_streams)
	{
		uint32_t cap = 16;

		while (cap < 2ULL * max_streams)
			cap <<= 1;
		index_.assign(cap, kNoSlot);
		mask_ = cap - 1;
	}

	uint32_t size() const { return active_; }
	uint32_t capacity() const { return max_; }
	Slot &slot(uint32_t id) { return slots_[id]; }
	uint32_t oldest() const { return tail_; }

	static uint64_t hash_key(const StreamKey &k)
	{
		return xxh64(reinterpret_cast<const uint8_t *>(&k), sizeof(k), 0);
	}

	uint32_t find(const StreamKey &k, uint64_t h) const
	{
		for (uint32_t i = home(h);; i = (i + 1) & mask_) {
			uint32_t id = index_[i];

			if (id == kNoSlot)
				return kNoSlot;
			if (slots_[id].hash == h && !memcmp(&slots_[id].key, &k, sizeof(k)))
				return id;
		}
	}

	/* Caller guarantees size() < capacity(). */
	uint32_t insert(const StreamKey &k, uint64_t h, uint64_t now_ns)
	{
		uint32_t id;

		if (!free_.empty()) {
			id = free_.back();
			free_.pop_back();
		} else {
			id = (uint32_t)slots_.size();
			slots_.emplace_back();
			/* Room to free every slot: erase() then never allocates. */
			if (free_.capacity() < slots_.size())
				free_.reserve(slots_.capacity());
		}
		Slot &s = slots_[id];
		s.key = k;
		s.hash = h;
		s.last_ns = now_ns;
		s.value.reset();

		uint32_t i = home(h);
		while (index_[i] != kNoSlot)
			i = (i + 1) & mask_;
		index_[i] = id;
		link_front(id);
		active_++;
		return id;
	}

	void erase(uint32_t id)
	{
		uint32_t i = home(slots_[id].hash);

		while (index_[i] != id)
			i = (i + 1) & mask_;
		shift_back(i);
		unlink(id);
		free_.push_back(id);
		active_--;
	}

	void touch(uint32_t id, uint64_t now_ns)
	{
		slots_[id].last_ns = now_ns;
		if (head_ != id) {
			unlink(id);
			link_front(id);
		}
	}

private:
	uint32_t home(uint64_t h) const { return (uint32_t)h & mask_; }

	/* Backward-shift deletion keeps probe chains intact without tombstones. */
	void shift_back(uint32_t hole)
	{
		uint32_t j = hole;

		index_[hole] = kNoSlot;
		for (;;) {
			j = (j + 1) & mask_;
			uint32_t id = index_[j];
			if (id == kNoSlot)
				return;
			uint32_t at = home(slots_[id].hash);
			bool stays = hole <= j ? (hole < at && at <= j) : (hole < at || at <= j);
			if (stays)
				continue;
			index_[hole] = id;
			index_[j] = kNoSlot;
			hole = j;
		}
	}

	void link_front(uint32_t id)
	{
		Slot &s = slots_[id];

		s.prev = kNoSlot;
		s.next = head_;
		if (head_ != kNoSlot)
			slots_[head_].prev = id;
		head_ = id;
		if (tail_ == kNoSlot)
			tail_ = id;
	}

	void unlink(uint32_t id)
	{
		Slot &s = slots_[id];

		if (s.prev != kNoSlot)
			slots_[s.prev].next = s.next;
		else
			head_ = s.next;
		if (s.next != kNoSlot)
			slots_[s.next].prev = s.prev;
		else
			tail_ = s.prev;
		s.prev = s.next = kNoSlot;
	}

	uint32_t max_;
	uint32_t mask_ = 0;
	uint32_t active_ = 0;
	uint32_t head_ = kNoSlot, tail_ = kNoSlot;
	std::vector<uint32_t> index_;
	std::vector<Slot> slots_;
	std::vector<uint32_t> free_;
};

} // namespace alt

#endif /* ALT_SIGNATURE_STREAM_TABLE_H */
