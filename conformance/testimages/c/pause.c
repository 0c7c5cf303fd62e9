/*
 * pause: the infra process of registry.k8s.io/pause, rewritten for krio's
 * offline test images. Sleeps until SIGINT or SIGTERM, then exits 0; reaps
 * every child it inherits (it is usually PID 1 of its namespace).
 *
 * Built by krio-testimages with: gcc -static -Os -s
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "3.9-krio"

static void on_down(int signo)
{
	psignal(signo, "Shutting down, got signal");
	exit(0);
}

static void on_child(int signo)
{
	(void)signo;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int main(int argc, char **argv)
{
	struct sigaction sa;

	if (argc > 1 && strcasecmp(argv[1], "-v") == 0) {
		printf("pause.c %s\n", VERSION);
		return 0;
	}
	if (getpid() != 1)
		fprintf(stderr, "Warning: pause should be the first process\n");

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_down;
	if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
		return 1;
	sa.sa_handler = on_child;
	sa.sa_flags = SA_NOCLDSTOP;
	if (sigaction(SIGCHLD, &sa, NULL) < 0)
		return 3;

	for (;;)
		pause();
	fprintf(stderr, "Error: infinite loop terminated\n");
	return 42;
}
