# /etc/cron.d/mailhop: run the mailhop queue every five minutes on systems
# where systemd, and so mailhop-queue.timer, is not running (containers,
# sysvinit, WSL). Under systemd the timer does this, and this line does
# nothing.
SHELL=/bin/sh
PATH=/usr/sbin:/usr/bin:/sbin:/bin
# The runner logs to syslog; cron must not mail its output (to the mailhop
# user, whose home is the spool).
MAILTO=""

*/5 * * * * mailhop [ -d /run/systemd/system ] || [ ! -x /usr/bin/mailhop ] || /usr/bin/mailhop queue run
