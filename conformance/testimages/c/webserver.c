/*
 * webserver: a tiny stand-in for nginx and Apache httpd in krio's offline
 * test images (registry.k8s.io/e2e-test-images/nginx, .../httpd and
 * gcr.io/k8s-staging-cri-tools/hostnet-nginx-*). It does what critest looks
 * at, nothing more:
 *
 * Invoked as "nginx" (argv[0] basename starts with "nginx"):
 *   - re-executes itself from its own path with argv[0] set to
 *     "nginx: master process <original command line>", so the comm stays
 *     "nginx" (pidof nginx finds it) and /proc/PID/cmdline contains
 *     "master process", like the real nginx master;
 *   - listens on the port of the first "listen N" in
 *     /etc/nginx/conf.d/default.conf (80 when there is none);
 *   - writes its pid to /var/run/nginx.pid once it listens.
 * Invoked as "httpd":
 *   - logs a line that names httpd to stderr, listens on port 80 and writes
 *     /usr/local/apache2/logs/httpd.pid.
 * Both answer every HTTP request with 200 and a small HTML page, reap
 * children, and exit 0 at once on SIGTERM, SIGINT or SIGQUIT.
 *
 * Built by krio-testimages with: gcc -static -Os -s
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define NGINX_CONF "/etc/nginx/conf.d/default.conf"
#define NGINX_PID "/var/run/nginx.pid"
#define HTTPD_PID "/usr/local/apache2/logs/httpd.pid"
#define TITLE_PREFIX "nginx: master process "

static const char *pid_file;

static const char nginx_page[] =
	"<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n</head>\n"
	"<body>\n<h1>Welcome to nginx!</h1>\n"
	"<p>krio offline test image stand-in.</p>\n</body>\n</html>\n";
static const char httpd_page[] = "<html><body><h1>It works!</h1></body></html>\n";

static void on_down(int signo)
{
	(void)signo;
	if (pid_file)
		unlink(pid_file);
	_exit(0);
}

static void on_child(int signo)
{
	int saved = errno;

	(void)signo;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved;
}

static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

/* Re-executes with the nginx master process title; returns on failure. */
static void retitle(int argc, char **argv)
{
	char exe[PATH_MAX];
	char *title, *p;
	size_t len = sizeof(TITLE_PREFIX);
	ssize_t n;
	int i;

	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0)
		exe[n] = '\0';
	else if (strchr(argv[0], '/') && strlen(argv[0]) < sizeof(exe))
		strcpy(exe, argv[0]);
	else
		return;
	for (i = 0; i < argc; i++)
		len += strlen(argv[i]) + 1;
	title = malloc(len);
	if (!title)
		return;
	p = stpcpy(title, TITLE_PREFIX);
	for (i = 0; i < argc; i++) {
		if (i > 0)
			*p++ = ' ';
		p = stpcpy(p, i == 0 ? base_name(argv[0]) : argv[i]);
	}
	{
		char *const args[] = { title, NULL };

		execv(exe, args);
	}
	free(title);
}

static int config_port(const char *path, int fallback)
{
	char buf[8192];
	ssize_t n;
	char *p;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return fallback;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return fallback;
	buf[n] = '\0';
	for (p = strstr(buf, "listen"); p; p = strstr(p + 1, "listen")) {
		char *q = p + 6;
		long port;

		if (q[0] != ' ' && q[0] != '\t')
			continue;
		while (*q == ' ' || *q == '\t')
			q++;
		port = strtol(q, NULL, 10);
		if (port > 0 && port < 65536)
			return (int)port;
	}
	return fallback;
}

static int listen_on(int port)
{
	int one = 1, off = 0, fd;
	struct sockaddr_in6 a6;
	struct sockaddr_in a4;

	fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0) {
		memset(&a6, 0, sizeof(a6));
		a6.sin6_family = AF_INET6;
		a6.sin6_port = htons(port);
		a6.sin6_addr = in6addr_any;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
		if (bind(fd, (struct sockaddr *)&a6, sizeof(a6)) == 0 && listen(fd, 128) == 0)
			return fd;
		close(fd);
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	memset(&a4, 0, sizeof(a4));
	a4.sin_family = AF_INET;
	a4.sin_port = htons(port);
	a4.sin_addr.s_addr = htonl(INADDR_ANY);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a4, sizeof(a4)) == 0 && listen(fd, 128) == 0)
		return fd;
	close(fd);
	return -1;
}

static void write_pid(const char *path)
{
	char buf[32];
	int len = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	if (fd < 0) {
		fprintf(stderr, "webserver: cannot write %s: %s\n", path, strerror(errno));
		return;
	}
	if (write(fd, buf, len) != len)
		fprintf(stderr, "webserver: short write to %s\n", path);
	close(fd);
	pid_file = path;
}

static void send_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		buf += n;
		len -= (size_t)n;
	}
}

static void serve(int fd, const char *page, const char *server)
{
	char req[8192], head[512];
	size_t used = 0;
	struct timeval tv = { .tv_sec = 5, .tv_usec = 0 };
	int len;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	while (used < sizeof(req) - 1) {
		ssize_t n = recv(fd, req + used, sizeof(req) - 1 - used, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		used += (size_t)n;
		req[used] = '\0';
		if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
			break;
	}
	if (used == 0)
		return;
	req[used] = '\0';
	len = snprintf(head, sizeof(head),
		       "HTTP/1.1 200 OK\r\nServer: %s\r\nContent-Type: text/html\r\n"
		       "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		       server, strlen(page));
	send_all(fd, head, (size_t)len);
	if (strncmp(req, "HEAD ", 5) != 0)
		send_all(fd, page, strlen(page));
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	const char *self = base_name(argv[0]);
	int nginx = strncmp(self, "nginx", 5) == 0;
	int port, fd;

	if (nginx && !strstr(argv[0], "master process"))
		retitle(argc, argv);

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_down;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGQUIT, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sa.sa_handler = on_child;
	sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
	sigaction(SIGCHLD, &sa, NULL);

	port = nginx ? config_port(NGINX_CONF, 80) : 80;
	fd = listen_on(port);
	if (fd < 0) {
		fprintf(stderr, "%s: cannot listen on port %d: %s\n", nginx ? "nginx" : "httpd", port,
			strerror(errno));
		return 1;
	}
	if (nginx) {
		write_pid(NGINX_PID);
	} else {
		fprintf(stderr,
			"AH00558: httpd: krio test image stand-in for Apache httpd listening on port %d\n",
			port);
		write_pid(HTTPD_PID);
	}
	fflush(stderr);

	for (;;) {
		int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);

		if (c < 0) {
			if (errno != EINTR)
				usleep(10000);
			continue;
		}
		serve(c, nginx ? nginx_page : httpd_page, nginx ? "nginx" : "Apache");
		close(c);
	}
}
