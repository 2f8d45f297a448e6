// SPDX-License-Identifier: GPL-2.0
// hook_probe_loader OBJECT: loads an eBPF object with libbpf and attaches each of
// its programs, printing "yes <program>" or "no <program>: <error>" per program;
// exits 0 only if every one attached. The guest runs it on each probe object
// (see probes.rs) to show which hook kinds this kernel accepts.
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

static int quiet(enum libbpf_print_level level, const char *fmt, va_list args)
{
	(void)level;
	(void)fmt;
	(void)args;
	return 0;
}

int main(int argc, char **argv)
{
	struct bpf_object *obj;
	struct bpf_program *prog;
	int failed = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: %s OBJECT\n", argv[0]);
		return 2;
	}
	libbpf_set_print(quiet);
	obj = bpf_object__open_file(argv[1], NULL);
	if (!obj) {
		printf("no open %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	if (bpf_object__load(obj)) {
		printf("no load: %s\n", strerror(errno));
		bpf_object__close(obj);
		return 1;
	}
	bpf_object__for_each_program(prog, obj) {
		struct bpf_link *link = bpf_program__attach(prog);

		if (!link) {
			printf("no %s: %s\n", bpf_program__section_name(prog), strerror(errno));
			failed = 1;
			continue;
		}
		printf("yes %s\n", bpf_program__section_name(prog));
		bpf_link__destroy(link);
	}
	bpf_object__close(obj);
	return failed;
}
