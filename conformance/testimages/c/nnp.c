/*
 * nnp: entrypoint of registry.k8s.io/e2e-test-images/nonewprivs, rewritten
 * for krio's offline test images. Installed setuid root (mode 04755), it
 * prints its effective uid: 0 when the setuid bit took effect, the caller's
 * uid when no_new_privs stopped it.
 *
 * Built by krio-testimages with: gcc -static -Os -s
 */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	printf("Effective uid: %d\n", (int)geteuid());
	return fflush(stdout) == 0 ? 0 : 1;
}
