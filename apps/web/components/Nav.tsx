'use client';
import Link from 'next/link';
import { usePathname } from 'next/navigation';

import { useApi } from './ApiProvider';

const LINKS = [
  { href: '/jobs', label: 'Jobs' },
  { href: '/jobs/new', label: 'New job' },
  { href: '/compare', label: 'Compare' },
  { href: '/datasets', label: 'Datasets' },
  { href: '/models', label: 'Models' },
];

export function Nav() {
  const pathname = usePathname();
  const { signOut } = useApi();
  const current = (href: string) =>
    href === '/jobs'
      ? pathname === '/jobs' || (pathname.startsWith('/jobs/') && pathname !== '/jobs/new')
      : pathname === href;
  return (
    <header className="topbar">
      <Link href="/jobs" className="brand">
        Expertune
      </Link>
      <nav aria-label="Main">
        <ul>
          {LINKS.map((link) => (
            <li key={link.href}>
              <Link href={link.href} aria-current={current(link.href) ? 'page' : undefined}>
                {link.label}
              </Link>
            </li>
          ))}
        </ul>
      </nav>
      <button type="button" className="secondary" onClick={signOut} data-testid="sign-out">
        Forget key
      </button>
    </header>
  );
}
