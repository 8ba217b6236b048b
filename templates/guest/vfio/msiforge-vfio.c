// SPDX-License-Identifier: GPL-2.0
/*
 * msiforge-vfio: drive a platform device's MSIs through vfio-platform, as a
 * user-space driver (or a VMM) would, and check every step.
 *
 * Built static against the kernel's own nolibc (tools/include/nolibc) and
 * uapi headers, so it needs no C library in the guest.  Usage:
 *
 *   msiforge-vfio GROUP DEVICE WIRED MSIS FIRST COUNT FIRES CTL
 *
 * GROUP is /dev/vfio/noiommu-N, DEVICE the platform device's name, WIRED and
 * MSIS what the board says it has, [FIRST, FIRST + COUNT) the vectors to
 * give eventfds, FIRES the sends per vector, and CTL the device-specific
 * module's debugfs directory: "fire" makes the device send a vector's
 * stored message ("SLOT TIMES"), "store" lists what it holds.
 *
 * Output: "# " lines (diagnostics, the GET_IRQ_INFO listing) and, on the
 * first failed check, one "FAIL: " line; exit 0 when every check passed.
 */

#include <linux/vfio.h>

#define MAX_MSIS	64
#define WAIT_MS		2000	/* for an interrupt to reach its eventfd */
#define QUIET_MS	200	/* then no more may arrive */

/* nolibc has neither eventfd() nor strcat(); 7.x's names its syscall macros __nolibc_. */
#define EFD_NONBLOCK	O_NONBLOCK
#ifndef my_syscall2
#define my_syscall2	__nolibc_syscall2
#endif

static int eventfd(unsigned int initval, int flags)
{
	return __sysret(my_syscall2(__NR_eventfd2, initval, flags));
}

static void append(char *dst, const char *src)
{
	memcpy(dst + strlen(dst), src, strlen(src) + 1);
}

static const char *ctl;
static const char *devname;

static void fail(const char *what, long got, long want)
{
	printf("FAIL: %s: got %ld, expected %ld\n", what, got, want);
	exit(1);
}

static void check(int ok, const char *what)
{
	if (!ok) {
		printf("FAIL: %s (errno %d)\n", what, errno);
		exit(1);
	}
}

static void expect(const char *what, long got, long want)
{
	if (got != want)
		fail(what, got, want);
}

static int contains(const char *s, const char *sub)
{
	size_t n = strlen(sub);

	for (; *s; s++)
		if (!strncmp(s, sub, n))
			return 1;
	return 0;
}

/* Read a whole (small) file; returns its length. */
static int slurp(const char *path, char *buf, int size)
{
	int fd = open(path, O_RDONLY), n = 0, r;

	check(fd >= 0, path);
	while (n < size - 1 && (r = read(fd, buf + n, size - 1 - n)) > 0)
		n += r;
	buf[n] = 0;
	close(fd);
	return n;
}

static char *path_of(const char *dir, const char *file)
{
	static char buf[256];

	buf[0] = 0;
	append(buf, dir);
	append(buf, "/");
	append(buf, file);
	return buf;
}

/* The device sends vector @slot's stored message @times times. */
static void fire(unsigned int slot, unsigned int times)
{
	char cmd[32], num[24];
	int fd = open(path_of(ctl, "fire"), O_WRONLY);

	check(fd >= 0, "open the device's debugfs control");
	utoa_r(slot, num);
	cmd[0] = 0;
	append(cmd, num);
	append(cmd, " ");
	utoa_r(times, num);
	append(cmd, num);
	check(write(fd, cmd, strlen(cmd)) == (ssize_t)strlen(cmd), "fire");
	close(fd);
}

/* What an eventfd counted since it was last read (non-blocking). */
static unsigned long drain(int efd)
{
	__u64 v = 0;

	if (read(efd, &v, sizeof(v)) != (ssize_t)sizeof(v))
		return 0;
	return v;
}

/* Wait until @efd counted @want, then a quiet time; return what it counted. */
static unsigned long collect(int efd, unsigned long want)
{
	unsigned long got = 0;
	int ms;

	for (ms = 0; ms < WAIT_MS && got < want; ms += 10) {
		got += drain(efd);
		if (got < want)
			usleep(10000);
	}
	usleep(QUIET_MS * 1000);
	return got + drain(efd);
}

/* Lines of /proc/interrupts with vfio-platform MSI actions of the device. */
static int proc_vectors(void)
{
	static char buf[65536];
	char want[80];
	char *line;
	int n = 0;

	slurp("/proc/interrupts", buf, sizeof(buf));
	want[0] = 0;
	append(want, "vfio-msi[");
	for (line = buf; *line; ) {
		char *end = line;

		while (*end && *end != '\n')
			end++;
		if (*end)
			*end++ = 0;
		if (contains(line, want) && contains(line, devname))
			n++;
		line = end;
	}
	return n;
}

/* How many of the device's storage slots hold a message (non-zero address). */
static int stored_messages(unsigned int first, unsigned int count, int *outside)
{
	static char buf[8192];
	char *p;
	int in = 0;

	*outside = 0;
	slurp(path_of(ctl, "store"), buf, sizeof(buf));
	/* "slot addr_hi addr_lo data", one line per slot */
	for (p = buf; *p; ) {
		unsigned long slot = strtoul(p, &p, 0);
		unsigned long hi = strtoul(p, &p, 0);
		unsigned long lo = strtoul(p, &p, 0);

		strtoul(p, &p, 0);
		while (*p == '\n' || *p == ' ')
			p++;
		if (!hi && !lo)
			continue;
		if (slot >= first && slot < first + count)
			in++;
		else
			(*outside)++;
	}
	return in;
}

static void set_irqs(int dev, unsigned int flags, unsigned int index, unsigned int start,
		     unsigned int count, const void *data, unsigned int size, const char *what)
{
	static char buf[sizeof(struct vfio_irq_set) + MAX_MSIS * sizeof(__s32)];
	struct vfio_irq_set *set = (struct vfio_irq_set *)buf;

	set->argsz = sizeof(*set) + size;
	set->flags = flags;
	set->index = index;
	set->start = start;
	set->count = count;
	if (size)
		memcpy(set->data, data, size);
	check(ioctl(dev, VFIO_DEVICE_SET_IRQS, set) == 0, what);
}

static const char *flag_names(unsigned int f)
{
	static char buf[96];

	buf[0] = 0;
	if (f & VFIO_IRQ_INFO_EVENTFD)
		append(buf, "|EVENTFD");
	if (f & VFIO_IRQ_INFO_MASKABLE)
		append(buf, "|MASKABLE");
	if (f & VFIO_IRQ_INFO_AUTOMASKED)
		append(buf, "|AUTOMASKED");
	if (f & VFIO_IRQ_INFO_NORESIZE)
		append(buf, "|NORESIZE");
	if (f & VFIO_IRQ_INFO_FLAG_CAPS)
		append(buf, "|CAPS");
	return buf[0] ? buf + 1 : "none";
}

/* GET_IRQ_INFO of every index: n wired ones, then the MSI index with its capability. */
static void check_layout(int dev, unsigned int wired, unsigned int msis)
{
	struct vfio_irq_info old;
	unsigned int i;

	for (i = 0; i < wired + 1; i++) {
		char buf[sizeof(struct vfio_irq_info) + 64];
		struct vfio_irq_info *info = (struct vfio_irq_info *)buf;
		struct vfio_irq_info_cap_type *cap;
		unsigned int need;

		memset(buf, 0, sizeof(buf));
		info->argsz = sizeof(*info);
		info->index = i;
		check(ioctl(dev, VFIO_DEVICE_GET_IRQ_INFO, info) == 0, "VFIO_DEVICE_GET_IRQ_INFO");
		if (i < wired) {
			printf("# GET_IRQ_INFO index %u: count %u flags %s: wired\n",
			       i, info->count, flag_names(info->flags));
			expect("wired index: count", info->count, 1);
			expect("wired index: capabilities",
			       !!(info->flags & VFIO_IRQ_INFO_FLAG_CAPS), 0);
			continue;
		}
		/* The MSI index: its capabilities do not fit; argsz says what does. */
		need = info->argsz;
		expect("MSI index: count (the device's MSI vectors)", info->count, msis);
		expect("MSI index: flags", info->flags,
		       VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE |
		       VFIO_IRQ_INFO_NORESIZE | VFIO_IRQ_INFO_FLAG_CAPS);
		expect("MSI index: cap_offset when argsz is too small", info->cap_offset, 0);
		check(need > sizeof(*info) && need <= sizeof(buf),
		      "MSI index: argsz grows to hold the capability");
		info->argsz = need;
		check(ioctl(dev, VFIO_DEVICE_GET_IRQ_INFO, info) == 0,
		      "VFIO_DEVICE_GET_IRQ_INFO (with caps)");
		check(info->cap_offset >= sizeof(*info) && info->cap_offset + sizeof(*cap) <= need,
		      "MSI index: cap_offset inside the returned size");
		cap = (struct vfio_irq_info_cap_type *)(buf + info->cap_offset);
		expect("MSI index: capability id", cap->header.id, VFIO_IRQ_INFO_CAP_TYPE);
		expect("MSI index: capability version", cap->header.version, 1);
		expect("MSI index: capability next", cap->header.next, 0);
		expect("MSI index: type", cap->type, VFIO_IRQ_TYPE_MSI);
		expect("MSI index: subtype", cap->subtype, VFIO_IRQ_SUBTYPE_MSI_PLATFORM);
		printf("# GET_IRQ_INFO index %u: count %u flags %s, argsz %u, cap_offset %u: ",
		       i, info->count, flag_names(info->flags), need, info->cap_offset);
		printf("CAP_TYPE type %u (MSI) subtype %u (MSI_PLATFORM)\n",
		       cap->type, cap->subtype);
	}

	/* Old user space (argsz ending at count) gets what it always got. */
	memset(&old, 0xa5, sizeof(old));
	old.argsz = offsetof(struct vfio_irq_info, cap_offset);
	old.index = wired;
	check(ioctl(dev, VFIO_DEVICE_GET_IRQ_INFO, &old) == 0, "GET_IRQ_INFO with the old argsz");
	expect("old argsz: count", old.count, msis);
	expect("old argsz: cap_offset left alone", old.cap_offset, 0xa5a5a5a5);
	old.argsz = sizeof(old);
	old.index = wired + 1;
	check(ioctl(dev, VFIO_DEVICE_GET_IRQ_INFO, &old) < 0 && errno == EINVAL,
	      "GET_IRQ_INFO past the last index fails with EINVAL");
}

int main(int argc, char **argv)
{
	struct vfio_group_status status = { .argsz = sizeof(status) };
	struct vfio_device_info info = { .argsz = sizeof(info) };
	unsigned int wired, msis, first, count, fires, i, msi;
	int container, group, dev, outside;
	__s32 fds[MAX_MSIS];
	__u8 bools[MAX_MSIS];

	if (argc != 9) {
		printf("FAIL: usage: %s GROUP DEVICE WIRED MSIS FIRST COUNT FIRES CTL\n", argv[0]);
		return 2;
	}
	devname = argv[2];
	wired = atoi(argv[3]);
	msis = atoi(argv[4]);
	first = atoi(argv[5]);
	count = atoi(argv[6]);
	fires = atoi(argv[7]);
	ctl = argv[8];
	check(count && count <= MAX_MSIS && first + count <= msis, "FIRST/COUNT within the MSIs");
	msi = wired;	/* the MSI index comes after the wired ones */

	container = open("/dev/vfio/vfio", O_RDWR);
	check(container >= 0, "open /dev/vfio/vfio");
	expect("VFIO_GET_API_VERSION", ioctl(container, VFIO_GET_API_VERSION, 0), VFIO_API_VERSION);
	expect("VFIO_CHECK_EXTENSION(VFIO_NOIOMMU_IOMMU)",
	       ioctl(container, VFIO_CHECK_EXTENSION, (void *)VFIO_NOIOMMU_IOMMU), 1);
	group = open(argv[1], O_RDWR);
	check(group >= 0, "open the no-IOMMU group");
	check(ioctl(group, VFIO_GROUP_GET_STATUS, &status) == 0, "VFIO_GROUP_GET_STATUS");
	check(status.flags & VFIO_GROUP_FLAGS_VIABLE, "the group is viable");
	/* A container takes its IOMMU type once it has a group. */
	check(ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) == 0, "VFIO_GROUP_SET_CONTAINER");
	check(ioctl(container, VFIO_SET_IOMMU, (void *)VFIO_NOIOMMU_IOMMU) == 0,
	      "VFIO_SET_IOMMU(NOIOMMU)");
	dev = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, (void *)devname);
	check(dev >= 0, "VFIO_GROUP_GET_DEVICE_FD");

	check(ioctl(dev, VFIO_DEVICE_GET_INFO, &info) == 0, "VFIO_DEVICE_GET_INFO");
	check(info.flags & VFIO_DEVICE_FLAGS_PLATFORM, "a platform device");
	printf("# GET_INFO: flags 0x%x (PLATFORM%s), %u regions, %u irq indexes\n",
	       info.flags, info.flags & VFIO_DEVICE_FLAGS_RESET ? "|RESET" : "",
	       info.num_regions, info.num_irqs);
	expect("num_irqs (the wired interrupts, then the MSI index)", info.num_irqs, wired + 1);
	check_layout(dev, wired, msis);
	expect("vectors in /proc/interrupts before any trigger", proc_vectors(), 0);

	/* Eventfds for [first, first + count): the block is allocated, those vectors requested. */
	for (i = 0; i < count; i++) {
		fds[i] = eventfd(0, EFD_NONBLOCK);
		check(fds[i] >= 0, "eventfd");
	}
	set_irqs(dev, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, msi, first, count,
		 fds, count * sizeof(__s32), "SET_IRQS TRIGGER eventfds");
	expect("vectors in /proc/interrupts", proc_vectors(), count);
	expect("messages the device holds for the sub-range",
	       stored_messages(first, count, &outside), count);
	expect("messages the device holds outside the sub-range", outside, 0);
	printf("# SET_IRQS TRIGGER index %u start %u count %u: ", msi, first, count);
	printf("%u vectors requested, their messages stored by the device's handler\n", count);

	for (i = 0; i < count; i++) {
		fire(first + i, fires);
		expect("eventfd count of a fired vector", collect(fds[i], fires), fires);
	}
	printf("# each vector fired %u time(s) by the device: every eventfd counted %u\n",
	       fires, fires);

	/* Loopback: DATA_NONE signals every eventfd of the range, DATA_BOOL the chosen ones. */
	set_irqs(dev, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, msi, first, count,
		 NULL, 0, "SET_IRQS TRIGGER DATA_NONE (loopback)");
	for (i = 0; i < count; i++)
		expect("eventfd after a DATA_NONE loopback", collect(fds[i], 1), 1);
	for (i = 0; i < count; i++)
		bools[i] = !(i & 1);
	set_irqs(dev, VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER, msi, first, count,
		 bools, count, "SET_IRQS TRIGGER DATA_BOOL (loopback)");
	for (i = 0; i < count; i++)
		expect("eventfd after a DATA_BOOL loopback", collect(fds[i], bools[i]), bools[i]);

	/* Masked at the interrupt controller: nothing arrives; unmasked, what was held, once. */
	set_irqs(dev, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK, msi, first, 1,
		 NULL, 0, "SET_IRQS MASK");
	fire(first, fires);
	expect("eventfd of a masked vector", collect(fds[0], 0), 0);
	set_irqs(dev, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK, msi, first, 1,
		 NULL, 0, "SET_IRQS UNMASK");
	expect("eventfd after unmask (the held interrupt, once)", collect(fds[0], 1), 1);
	fire(first, 1);
	expect("eventfd of the unmasked vector fired once", collect(fds[0], 1), 1);
	printf("# vector %u masked: %u fire(s) delivered nothing; unmasked: 1 delivered\n",
	       first, fires);

	/* One vector's eventfd removed (fd -1): it leaves /proc/interrupts, the others stay. */
	fds[0] = -1;
	set_irqs(dev, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, msi, first, 1,
		 fds, sizeof(__s32), "SET_IRQS TRIGGER fd -1");
	expect("vectors in /proc/interrupts after one fd -1", proc_vectors(), count - 1);

	/* Release: DATA_NONE with count 0 frees the block; deactivation zeroes the messages. */
	set_irqs(dev, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, msi, 0, 0,
		 NULL, 0, "SET_IRQS TRIGGER count 0 (disable)");
	expect("vectors in /proc/interrupts after disable", proc_vectors(), 0);
	expect("messages the device holds after disable", stored_messages(0, msis, &outside), 0);
	close(dev);
	close(group);
	close(container);
	expect("vectors in /proc/interrupts after close", proc_vectors(), 0);
	printf("# released: no vector left in /proc/interrupts, no message left in the device\n");
	return 0;
}
