import { SetMetadata } from '@nestjs/common';

export const IS_PUBLIC = 'expertune:public';

/** Routes anyone may call without an API key (health). */
export const Public = () => SetMetadata(IS_PUBLIC, true);
